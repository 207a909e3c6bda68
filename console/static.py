"""The console's one stylesheet: light and dark (prefers-color-scheme), readable on a phone."""

from __future__ import annotations

from typing import Final

__all__ = ["CSS"]

CSS: Final = """
:root{--bg:#fafafa;--fg:#1b1f24;--muted:#5a6270;--card:#fff;--line:#d8dde3;--accent:#2463b4;
--bad:#b42318;--warn:#9a6700;--ok:#1a7f37;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e6e9ed;--muted:#9aa4b1;--card:#1a1e24;
--line:#2f3640;--accent:#6ea8fe;--bad:#ff7b72;--warn:#e3b341;--ok:#56d364}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
a{color:var(--accent)}a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
header{display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:center;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header .brand{font-weight:700;margin-right:1rem;text-decoration:none;color:var(--fg)}
header nav ul{display:flex;flex-wrap:wrap;gap:.25rem 1rem;list-style:none;margin:0;padding:0}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:.75rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.75rem 1rem}
.card .big{font-size:1.4rem;font-weight:600;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}.bad{color:var(--bad)}.warn{color:var(--warn)}.ok{color:var(--ok)}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:var(--card)}
caption{text-align:left;font-weight:600;padding:.4rem 0}
th,td{padding:.35rem .6rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.chart{width:100%;max-width:40rem;height:auto}
.chart .bar{fill:var(--accent)}.chart .cell{fill:var(--accent)}
.chart .axis{stroke:var(--line)}.chart .tick{fill:var(--muted);font-size:11px}
form.inline{display:inline}
label{display:block;margin:.5rem 0 .2rem;font-weight:600}
input[type=text],input[type=password],input[type=search]{width:100%;max-width:28rem;padding:.4rem;
border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg);font:inherit}
button,.button{display:inline-block;margin-top:.75rem;padding:.45rem .9rem;border-radius:6px;border:1px solid var(--accent);
background:var(--accent);color:#fff;font:inherit;cursor:pointer;text-decoration:none}
button.danger{background:var(--bad);border-color:var(--bad)}
.notice{border-left:4px solid var(--warn);padding:.5rem .75rem;background:var(--card);margin:1rem 0}
.notice.error{border-color:var(--bad)}.notice.done{border-color:var(--ok)}
.pager{display:flex;gap:1rem;margin:.75rem 0}
@media (max-width:40rem){main{padding:.5rem}th,td{padding:.3rem .35rem}.hide-narrow{display:none}}
"""
