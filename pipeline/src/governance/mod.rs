//! Information governance: the rules that protect people, each small and separate.

pub mod audit;
pub mod feedback;
pub mod optouts;
pub mod pseudonym;
pub mod teams;
pub mod vault;
