//! The actix actors of a node and the pure cores they drive: the terminal
//! model, the agent-state engine, the plain-text log renderer, the web
//! viewers' stream (resume and late-join paint, `wire`), and the PTY holder
//! process that keeps agents alive when the daemon is not.

pub mod agent;
pub mod holder;
pub mod plaintext;
pub mod state;
pub mod term;
pub mod wire;
pub mod wire_queue;
