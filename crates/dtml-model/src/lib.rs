//! Candle model definitions for dtml: the 3D operations candle lacks and the
//! dual-task V-Net. Not implemented yet (issue 4); this crate exposes nothing
//! so that nothing can be mistaken for working.

pub mod ops;
