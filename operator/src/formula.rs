//! scalingModifiers formulas.
