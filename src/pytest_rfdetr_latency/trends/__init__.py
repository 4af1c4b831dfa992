"""Trends over the run history: persistent shifts (changepoints), which of them are open slowdowns (shifts), the
history page (page) and the ``rfdetr-latency`` console script (cli).

May import: verdict, store, measure, report."""
