//! What nodes tell each other over NATS (JSON, one message per NATS message).
//!
//! Subjects, under the cluster's prefix (`sidecall` unless `--cluster-name` says otherwise):
//! - `PREFIX.node.NODE`: everything meant for one node, in the order it was sent (NATS keeps
//!   the order of one connection's messages on one subject, which is what keeps a session's
//!   signals in order). Ring requests come here too, as requests with a reply subject.
//! - `PREFIX.all`: heartbeats, goodbyes, and changes every node holding a user must apply.

use crate::protocol::{Offer, Role, SessionId, Settings, SignalData};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A device on another node, with what the session's authority must know of its user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteDevice {
    pub device: i64,
    pub user: i64,
    /// The node whose WebSocket holds the device.
    pub node: String,
    pub number: String,
    pub display_name: String,
    pub verified: bool,
    pub hides_address: bool,
    pub reported_ip: Option<IpAddr>,
    pub observed_ip: IpAddr,
}

/// A row of the presence table: one online device and the node holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceRow {
    pub device: i64,
    pub user: i64,
    pub node: String,
    pub reported_ip: Option<IpAddr>,
    pub observed_ip: IpAddr,
}

/// What a device asks of a session held by another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DeviceOp {
    Answer { accept: bool },
    Signal { data: SignalData },
    End,
    Resume { role: Role, peer: String },
}

/// An access request handed to the node that is the authority for the callee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRequest {
    pub session: SessionId,
    pub caller: RemoteDevice,
    pub req_id: u64,
    pub offer: Offer,
    pub call_ref: Option<String>,
    /// The callee's number (E.164).
    pub target: String,
    /// The callee's online devices, as the caller's node found them.
    pub devices: Vec<PresenceRow>,
    /// Click-to-call: place the phone call through the PBX first (from the caller's extension).
    pub place_call: Option<Option<String>>,
}

/// Messages for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum NodeMsg {
    /// A server message for a device connected to the receiver (already encoded).
    Deliver { device: i64, text: String },
    /// The device takes part in a session the sender holds (again, with `active` once it
    /// was accepted). `req_id`: the caller's pending request.
    Attach {
        device: i64,
        session: SessionId,
        role: Role,
        active: bool,
        req_id: Option<u64>,
        /// Active: the other device and its user (the relay asks for it).
        peer: Option<(i64, i64)>,
    },
    /// The device is out of the session.
    Detach { device: i64, session: SessionId },
    /// A device of the sender acts on a session the receiver holds.
    Op { from: RemoteDevice, session: SessionId, op: DeviceOp },
    /// A device of the sender went offline.
    Gone { device: i64, node: String },
    /// Close the device's connection (it connected elsewhere, logged out, was revoked).
    Kick { device: i64, code: u16, reason: String },
    /// Ring a callee whose authority the receiver is (a request: the reply says it was done).
    Ring(Box<RingRequest>),
}

/// A change to a user that every node holding one of their devices applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum UserChange {
    Settings { settings: Settings },
    Blocked { numbers: Vec<String> },
    Extension { extension: Option<String> },
}

/// Messages for every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum AllMsg {
    Beat {
        node: String,
    },
    /// The node stops (a graceful shutdown): the others need not wait for its heartbeat.
    Left {
        node: String,
    },
    /// From `node` (which applied it already).
    User {
        node: String,
        user: i64,
        change: UserChange,
    },
    Kick {
        device: i64,
        code: u16,
        reason: String,
    },
    /// A device logged in at `row.node` (every node keeps a copy of the presence table).
    Online {
        number: String,
        row: PresenceRow,
    },
    /// A device's connection at `node` ended.
    Offline {
        device: i64,
        node: String,
    },
}
