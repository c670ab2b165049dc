//! Test and benchmark support: the real news corpus and a real local HTTP news site serving it.
//! Used by `tests/` and `newsd bench`; not used by the daemon.
pub mod cluster;
pub mod corpus;
pub mod server;

pub use corpus::{CorpusArticle, squash};
pub use server::NewsServer;
pub mod llama;
pub mod llm;
pub mod webhook;

pub use llm::{LlmReply, LlmServer};
pub use webhook::{Reply, WebhookReceiver};
pub mod hostile;

pub use hostile::{Canned, HostileServer};
