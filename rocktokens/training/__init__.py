"""Layer 1: the trainer (FSDP2, chunked head loss, resumable state) and the offline / OPD loops that drive it."""
