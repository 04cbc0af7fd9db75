//! Id newtypes, so that a channel id can never be passed where a user id is expected.
//! All ids are positive 63-bit integers assigned by the store; `Seq` is the JetStream stream
//! sequence of a message, which is its global id (docs/design.md §4.3).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An organization (a company): the unit of isolation.
    OrgId
);
id_type!(
    /// A user; belongs to exactly one org.
    UserId
);
id_type!(
    /// A channel of any kind (public, private, dm, group_dm); belongs to exactly one org.
    ChannelId
);

/// JetStream stream sequence of a stored message: strictly increasing, never reused.
pub type Seq = u64;
