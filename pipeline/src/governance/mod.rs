//! Information governance: the rules that protect people, each small and separate.

pub mod optouts;
