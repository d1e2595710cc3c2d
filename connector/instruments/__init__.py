"""The instrument universe of both venues: ``model`` (one instrument type, dense
ids), ``kite_csv`` / ``binance_info`` (import), ``store`` (WAL-backed snapshots),
``universe`` (indexes and queries), ``subscribe`` (feed subscriptions by query),
``service`` (daily refresh under the supervisor), ``cli``."""
