"""The verdict: pure decisions over figures already measured. Did a scope get slower than its stored baseline
(judge, stored, decision, gating) or than the other side of a head to head (paired), and is it over an absolute
budget? Summaries of samples (stats), the scopes' defaults (scopes) and the spread between sessions a runner's own
checks show (sessions) live here too.

May import: nothing else of this package, and no measuring library (torch, onnxruntime, rfdetr, numpy, pytest) at
module level; tests/test_layers.py holds it to that."""
