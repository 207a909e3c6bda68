"""The built-in console: HTML pages at `/` served by the daemon itself (issue 15).

`console.data` declares what the pages read and do (ConsoleData); `console.source` implements it
over the daemon's parts; `console.routes` serves the pages; `console.pages`, `console.charts` and
`console.static` render them (escaped HTML, server-rendered SVG, one stylesheet, no CDN)."""
