//! Semi-supervised training and inference for dtml. Not implemented yet
//! (issues 6 and 7); this crate exposes nothing so that nothing can be
//! mistaken for working.
