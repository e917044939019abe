"""Read models (EHR, billing, analytics) built from canonical topics."""
