//! Losses of the DTML family (soft Dice, BCE, SDM regression, the SDM-to-mask
//! transform, consistency, ramp-up). Not implemented yet (issue 7); this
//! crate exposes nothing so that nothing can be mistaken for working.
