//! kvmtune: tunes a KVM host for each VM while it runs, and puts the host back exactly when it
//! stops. See SPEC.md for the contract and DESIGN.md for the data flow:
//! domain XML + policy + host snapshot → `plan` (pure) → `apply` (journaled) → `release`.

pub mod advisor;
pub mod apply;
pub mod assemble;
pub mod balance;
pub mod change;
pub mod cli;
pub mod cpulist;
pub mod domain;
pub mod error;
pub mod hook;
pub mod host;
pub mod irq;
pub mod isolation;
pub mod knobs;
pub mod launch;
pub mod log;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod privilege;
pub mod size;
pub mod state;
pub mod status;
pub mod stop;
pub mod watch;
