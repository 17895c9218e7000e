//! The client protocol of a coordinator replica (what `ramcoord ctl`
//! speaks): a transport message tagged [`super::tag::CLIENT`] carrying a
//! postcard-encoded [`ClientRequest`]; the answer is tagged
//! [`super::tag::CLIENT_REPLY`] and carries a [`ClientReply`]. Anything
//! that does not decode is counted and dropped, like any bad message.

use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// This replica's view of the group and the cluster.
    Status,
}

/// A replica's view, for `ctl status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The replica.
    pub id: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: String,
    /// Its Raft term.
    pub term: u64,
    /// Its commit index.
    pub commit: u64,
    /// Its last log index.
    pub last_index: u64,
    /// The index its cluster state has applied.
    pub applied: u64,
    /// Who it believes leads.
    pub leader: Option<u64>,
    /// Whether it is the active coordinator (leader with its term's entry
    /// applied).
    pub active: bool,
    /// Servers up in its cluster state.
    pub servers_up: u64,
    /// Tables in its cluster state.
    pub tables: u64,
    /// Operations past their commit point, not complete.
    pub incomplete: u64,
    /// Per follower (leader only): (replica, match index).
    pub match_index: Vec<(u64, u64)>,
}

/// What a replica answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// The answer to [`ClientRequest::Status`].
    Status(Status),
}

/// Largest client message accepted.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 64 << 10;

/// Decodes a request body (after the tag).
pub fn decode_request(b: &[u8]) -> Result<ClientRequest, String> {
    decode(b)
}

/// Decodes a reply body (after the tag).
pub fn decode_reply(b: &[u8]) -> Result<ClientReply, String> {
    decode(b)
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    if b.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(format!("client message of {} bytes", b.len()));
    }
    let (v, rest): (T, &[u8]) = postcard::take_from_bytes(b).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes", rest.len()));
    }
    Ok(v)
}

/// Encodes a tagged message.
pub fn encode<T: Serialize>(tag: u8, v: &T) -> bytes::Bytes {
    let mut out = vec![tag];
    out.extend(postcard::to_stdvec(v).expect("client messages always serialise"));
    bytes::Bytes::from(out)
}
