//! broker-bridge: will move every stored message from the JetStream `MESSAGES` stream into the
//! partitioned Postgres `messages` table, one durable pull consumer per org partition, acking
//! JetStream only after the batch's commit (DESIGN §3–5). That writer is the subject of its
//! own issue and is **not built yet**; today Postgres holds the directory only and JetStream
//! is the sole store of messages (the stream keeps 7 days by default).
//!
//! What exists now is the partition → consumer mapping the writer and the operators' tooling
//! share, so that consumer names and filters are fixed before any durable consumer exists.

use threadspace_protocol::subjects::partition_of;
use threadspace_protocol::OrgId;

/// Durable consumer name of partition `k`: `writer-p<k>`.
pub fn consumer_name(partition: u32) -> String {
    format!("writer-p{partition}")
}

/// Subject filter of partition `k`: `msg.<k>.>`.
pub fn partition_filter(partition: u32) -> String {
    format!("msg.{partition}.>")
}

/// The partitions a bridge process owns when `n_processes` share `n_partitions`:
/// process `index` takes every partition `k` with `k % n_processes == index`.
pub fn owned_partitions(index: u32, n_processes: u32, n_partitions: u32) -> Vec<u32> {
    (0..n_partitions).filter(|k| n_processes > 0 && k % n_processes == index).collect()
}

/// Which partition (and so which consumer) an org's messages go through.
pub fn partition_for(org: OrgId, n_partitions: u32) -> u32 {
    partition_of(org, n_partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadspace_protocol::subjects::message_subject;
    use threadspace_protocol::ChannelId;

    #[test]
    fn processes_share_partitions_without_overlap_or_gap() {
        for n_processes in 1..6 {
            let mut all: Vec<u32> =
                (0..n_processes).flat_map(|i| owned_partitions(i, n_processes, 16)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..16).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_orgs_messages_match_its_partition_filter() {
        for org in 1..200 {
            let subject = message_subject(16, OrgId(org), ChannelId(7));
            let filter = partition_filter(partition_for(OrgId(org), 16));
            assert!(subject.starts_with(filter.trim_end_matches('>')), "{subject} vs {filter}");
        }
        assert_eq!(consumer_name(3), "writer-p3");
    }
}
