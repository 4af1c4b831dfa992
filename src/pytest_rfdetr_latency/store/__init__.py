"""What lasts between runs: the per-device baseline files (baselines), the run history (history) and the schemas
of every file the plugin writes (schema, with the published ``*.schema.json`` beside it).

May import: verdict."""
