//! The model floor (pure): rules every stage shares and no stage owns. Nothing here does I/O or
//! imports a module above it.
//!
//! - [`managed`]: the labels and annotations pullsecretd writes, instance identity and the proof
//!   of ownership every write and delete is checked against.
//! - [`rotation`]: versioned Secret names (one suffix rule).

pub mod managed;
pub mod rotation;
