"""What people read and tools consume: the terminal summary, JSON report and Markdown summary (render), what a
head-to-head run says of itself (duel), a failing case's message (failures), a regression's diagnosis (why), PNG
plots (plots) and pytest-benchmark's JSON format (exports). Pure functions of result dictionaries.

May import: verdict, store, measure."""
