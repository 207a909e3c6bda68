"""Offline tools: the hygiene audit, backtest and export."""
