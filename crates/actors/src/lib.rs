//! The actix actors of a node and the pure cores they drive: the terminal
//! model, the agent-state engine, the plain-text log renderer, and the PTY
//! holder process that keeps agents alive when the daemon is not.

pub mod agent;
pub mod holder;
pub mod plaintext;
pub mod state;
pub mod term;
