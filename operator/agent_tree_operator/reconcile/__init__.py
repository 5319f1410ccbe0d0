"""Pure reconcilers: (spec, observed state) -> plan (objects to apply, status to write). No I/O."""
