"""Health: snapshot model, scoring, GPUd client, storage, sweeps and the collector."""
