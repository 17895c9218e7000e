//! The in-memory transport: every node of a [`MemNetwork`] in one process,
//! messages handed over through channels, writes applied at once on the
//! sender's thread (standing in for the receiver's I/O path), and links
//! that tests can cut.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use crossbeam::channel::{unbounded, Receiver, Sender};

use crate::{apply_write, Event, PeerId, Region, RegionId, RegionMap, Transport};

#[derive(Default)]
struct Hub {
    inboxes: HashMap<PeerId, Sender<Event>>,
    regions: HashMap<PeerId, Arc<RegionMap>>,
    /// Directed links that drop everything.
    cut: HashSet<(PeerId, PeerId)>,
}

/// A set of in-memory nodes that can reach each other.
#[derive(Clone, Default)]
pub struct MemNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    /// A node `id` on this network.
    pub fn join(&self, id: PeerId) -> MemTransport {
        let (tx, rx) = unbounded();
        let regions = Arc::new(RwLock::new(HashMap::new()));
        let mut hub = self.hub.lock().expect("hub lock poisoned");
        hub.inboxes.insert(id, tx);
        hub.regions.insert(id, regions.clone());
        MemTransport {
            id,
            net: self.clone(),
            events: rx,
            regions,
            next_write: Mutex::new(0),
        }
    }

    /// Cuts (or restores) the directed link `from -> to`.
    pub fn set_link(&self, from: PeerId, to: PeerId, up: bool) {
        let mut hub = self.hub.lock().expect("hub lock poisoned");
        if up {
            hub.cut.remove(&(from, to));
        } else {
            hub.cut.insert((from, to));
        }
    }
}

/// One node's endpoint on a [`MemNetwork`].
pub struct MemTransport {
    id: PeerId,
    net: MemNetwork,
    events: Receiver<Event>,
    regions: Arc<RegionMap>,
    next_write: Mutex<u64>,
}

impl Transport for MemTransport {
    fn id(&self) -> PeerId {
        self.id
    }

    fn send(&self, to: PeerId, payload: Bytes) {
        let hub = self.net.hub.lock().expect("hub lock poisoned");
        if hub.cut.contains(&(self.id, to)) {
            return;
        }
        if let Some(inbox) = hub.inboxes.get(&to) {
            let _ = inbox.send(Event::Message {
                from: self.id,
                payload,
            });
        }
    }

    /// The in-memory network routes by id: addresses are not needed.
    fn add_peer(&self, _peer: PeerId, _addr: std::net::SocketAddr) {}

    fn write(&self, to: PeerId, region: RegionId, offset: u64, bytes: Bytes) -> u64 {
        let id = {
            let mut n = self.next_write.lock().expect("lock poisoned");
            *n += 1;
            *n
        };
        let (target, reply) = {
            let hub = self.net.hub.lock().expect("hub lock poisoned");
            if hub.cut.contains(&(self.id, to)) {
                return id;
            }
            let reply = !hub.cut.contains(&(to, self.id));
            (hub.regions.get(&to).cloned(), reply)
        };
        let Some(regions) = target else { return id };
        let status = apply_write(&regions, region, offset, &bytes);
        let hub = self.net.hub.lock().expect("hub lock poisoned");
        if let (true, Some(me)) = (reply, hub.inboxes.get(&self.id)) {
            let _ = me.send(Event::WriteDone { to, id, status });
        }
        id
    }

    fn register_region(&self, id: RegionId, region: Arc<dyn Region>) {
        self.regions
            .write()
            .expect("region map lock poisoned")
            .insert(id, region);
    }

    fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        let mut hub = self.net.hub.lock().expect("hub lock poisoned");
        hub.inboxes.remove(&self.id);
        hub.regions.remove(&self.id);
    }
}
