"""vitnas: hardware-aware NAS for efficient vision transformers."""
