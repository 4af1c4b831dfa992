"""Measuring: the case matrix (cases), the settings of a run, the device and its fingerprint (environment), models,
images, backends, clocks and sampling (timing, sampling), where threads run (placement), memory, output parity,
injected self-test slowdowns (injection), the work of one case in one process (case), more processes
(processes), head to head (headtohead, lockstep), and a deterministic stand-in for the plugin's own tests (fake).

May import: verdict, store."""
