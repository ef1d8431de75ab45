//! The AgentOS node (daemon): composition root, local IPC server, storage,
//! configuration, agent definitions, per-session hook injection, and the
//! HTTP/WebSocket server for the web client and collaborators.

pub mod audit_log;
pub mod config;
pub mod container;
pub mod daemon;
pub mod definitions;
pub mod devcontainer;
pub mod doc_actor;
pub mod hooks;
pub mod ipc;
pub mod memory;
pub mod paths;
pub mod proxy;
pub mod registry;
pub mod sandboxing;
pub mod store;
pub mod swarm;
pub mod web;
pub mod workspace;
pub mod worktree;

pub use agentos_proto as proto;
