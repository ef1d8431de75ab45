//! Deterministic, seeded simulation of AgentOS devices replicating one
//! workspace document ([`agentos_crdt::WorkspaceDoc`]).
//!
//! The core is sans-IO: no sockets, threads or wall clock. A run is a pure
//! function of a seed and a [`SimConfig`]:
//!
//! 1. **Chaos.** `N` devices perform random operations (create agents,
//!    state transitions, resume ids, pids, removals, saved sessions) on a
//!    small pool of names, while exchanging "I have heads H" / "here are
//!    the changes since your heads" messages through a network that loses,
//!    duplicates and reorders them and cuts device pairs for a while.
//!    Devices persist `save()` snapshots at random points and always before
//!    an acknowledged operation counts; crashed devices restart from their
//!    last snapshot.
//! 2. **Quiescence.** Partitions heal, loss stops, and anti-entropy rounds
//!    run until all heads are identical or `max_rounds` is reached.
//! 3. **Checks.** Convergence (heads, agents, sessions), no lost persisted
//!    operation, and a bounded message count.
//!
//! ```
//! let report = agentos_simulations::run(7, &agentos_simulations::SimConfig::default()).unwrap();
//! assert!(report.messages > 0);
//! ```

mod device;
mod net;
pub mod p2p;
pub mod rng;
mod sim;

pub use sim::{SimConfig, SimFailure, SimReport, run};
