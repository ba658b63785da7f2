//! # ehub-doc-examples
//!
//! The Rust examples of `README.md` and `docs/*.md`, compiled as they are written: the build
//! script turns each file's ```rust blocks, in order, into one async function (`readme`,
//! `client`, …) that takes a connection string `cs` and a storage connection string
//! `storage_cs`. A change of the API that breaks an example breaks the build; the test runs
//! the README's against a test broker. (The client guide's examples include a processor loop
//! that runs until stopped, so they are compiled, not run.)

include!(concat!(env!("OUT_DIR"), "/examples.rs"));
