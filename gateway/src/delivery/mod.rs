//! Delivery: getting stored messages to connections. The hub (who is connected, in which
//! channels, with what outbound queue), the fanout (the stream's records, in seq order, to the
//! hub), publishing a send to the stream, and the resume replay.
//!
//! Delivery knows nothing of sockets or of the client protocol's ops: the edge hands it a
//! connection handle and, for replay, somewhere to write frames ([`replay::FrameSink`]).

pub(crate) mod fanout;
pub(crate) mod hub;
pub(crate) mod publish;
pub(crate) mod replay;

use async_nats::jetstream::stream::ClusterInfo;

/// How far behind the leader (in replicated log entries) a follower may be and still host the
/// fanout's consumer.
const MAX_HOST_LAG: u64 = 20;

/// Why the replica hosting a consumer (`consumer`: the consumer info's cluster, whose leader is
/// the host of an R1 consumer) lags the stream leader, as the stream info's cluster (`stream`)
/// reports it: not current, or more than [`MAX_HOST_LAG`] entries behind. JetStream places an
/// R1 consumer (every ordered consumer) on any replica, and one on a replica that is behind
/// hands over nothing newer until that replica catches up — seconds, for a node that rejoined
/// after losing its disk (ARCHITECTURE.md, "Resume and the fanout consumer"). `None` for the
/// leader, a current replica, or when either side lacks the cluster (a single server).
pub(crate) fn lagging_host(stream: Option<&ClusterInfo>, consumer: Option<&ClusterInfo>) -> Option<String> {
    let host = consumer?.leader.as_deref()?;
    let cluster = stream?;
    if cluster.leader.as_deref() == Some(host) {
        return None;
    }
    let peer = cluster.replicas.iter().find(|peer| peer.name == host)?;
    let lag = peer.lag.unwrap_or(0);
    (!peer.current || lag > MAX_HOST_LAG)
        .then(|| format!("its replica {host} lags the stream leader (current: {}, lag: {lag})", peer.current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::PeerInfo;

    fn stream(leader: &str, replicas: &[(&str, bool, u64)]) -> ClusterInfo {
        ClusterInfo {
            leader: Some(leader.to_owned()),
            replicas: replicas
                .iter()
                .map(|(name, current, lag)| PeerInfo {
                    name: (*name).to_owned(),
                    current: *current,
                    lag: Some(*lag),
                    ..PeerInfo::default()
                })
                .collect(),
            ..ClusterInfo::default()
        }
    }

    fn on(host: &str) -> ClusterInfo {
        ClusterInfo { leader: Some(host.to_owned()), ..ClusterInfo::default() }
    }

    #[test]
    fn a_consumer_on_a_replica_that_lags_is_named_and_one_on_a_current_one_is_not() {
        let info = stream("n1", &[("n2", true, 3), ("n3", false, 0)]);
        assert_eq!(lagging_host(Some(&info), Some(&on("n1"))), None, "the leader");
        assert_eq!(lagging_host(Some(&info), Some(&on("n2"))), None, "current, 3 behind");
        let why = lagging_host(Some(&info), Some(&on("n3"))).expect("n3 is not current");
        assert!(why.contains("n3") && why.contains("current: false"), "{why}");
        let far = stream("n1", &[("n2", true, 21)]);
        assert!(lagging_host(Some(&far), Some(&on("n2"))).is_some(), "21 entries behind");
        assert_eq!(lagging_host(None, Some(&on("n3"))), None, "a single server");
        assert_eq!(lagging_host(Some(&info), None), None, "a consumer without a cluster");
        assert_eq!(lagging_host(Some(&info), Some(&on("n9"))), None, "a host the stream does not list");
    }
}
