//! Partitions: which bridge process owns which stream partitions, and the durable consumer
//! each sink keeps per partition (docs/design.md §5).

use threadspace_store::messages::Sink;

/// Durable consumer name of `sink` in partition `k` (`Sink::consumer_name`).
pub(crate) fn consumer_name(sink: Sink, partition: u32) -> String {
    sink.consumer_name(partition)
}

/// The partitions a bridge process owns when `n_processes` share `n_partitions`:
/// process `index` takes every partition `k` with `k % n_processes == index`.
pub(crate) fn owned_partitions(index: u32, n_processes: u32, n_partitions: u32) -> Vec<u32> {
    (0..n_partitions).filter(|k| n_processes > 0 && k % n_processes == index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadspace_protocol::subjects::{message_subject, partition_filter, partition_of};
    use threadspace_protocol::{ChannelId, OrgId};

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
            let filter = partition_filter(partition_of(OrgId(org), 16));
            assert!(subject.starts_with(filter.trim_end_matches('>')), "{subject} vs {filter}");
        }
        assert_eq!(consumer_name(Sink::Archive, 3), "writer-p3");
        assert_eq!(consumer_name(Sink::Search, 3), "indexer-p3");
    }
}
