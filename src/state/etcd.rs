//! The etcd backend: linearizable gets, and writes as transactions that also compare the
//! leader key's create revision, so a controller that lost its election cannot write.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, LeaderKey,
    SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use super::keys::KeyLayout;
use super::kv::{KvBackend, KvEntry, check_revision};
use super::store::KvStateStore;
use super::{Expected, StateError};

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `http://host:port` or, with `tls`, `https://host:port`.
    pub endpoints: Vec<String>,
    pub tls: Option<EtcdTls>,
    pub connect_timeout: Duration,
    /// Bound on every request; a request that exceeds it fails as `Unavailable`.
    pub request_timeout: Duration,
    /// Prefix of every key, see [`KeyLayout`].
    pub key_prefix: String,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            key_prefix: super::keys::DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// PEM files for TLS to etcd (etcd-client's rustls backend).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdTls {
    /// CA bundle that signed the servers' certificates.
    pub ca: PathBuf,
    /// Client certificate and key, when etcd requires client authentication.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name to verify the server certificate against, when it differs from the endpoint host.
    pub domain: Option<String>,
}

/// Connects to etcd as `config` says. Fails `Unavailable` when no endpoint answers in time.
pub async fn connect_etcd(config: &EtcdConfig) -> Result<Client, StateError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_timeout(config.request_timeout);
    if let Some(tls) = &config.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    Client::connect(&config.endpoints, Some(options))
        .await
        .map_err(|e| StateError::Unavailable {
            operation: "connect",
            key: config.endpoints.join(","),
            reason: e.to_string(),
        })
}

fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StateError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })
    };
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        (Some(path), None) | (None, Some(path)) => {
            return Err(StateError::InvalidName {
                what: "etcd TLS client identity",
                value: path.display().to_string(),
                reason: "client certificate and client key must be given together",
            });
        }
    }
    if let Some(domain) = &tls.domain {
        options = options.domain_name(domain.clone());
    }
    Ok(options)
}

/// The typed state store on etcd.
pub type EtcdStateStore = KvStateStore<EtcdKv>;

impl KvStateStore<EtcdKv> {
    /// A store on `client` under `config.key_prefix`, with no leadership yet: reads work,
    /// writes fail `NotLeader` until [`EtcdKv::set_leader`] is given a leader key.
    pub fn on_etcd(client: Client, key_prefix: &str) -> Result<Self, StateError> {
        Ok(KvStateStore::new(
            EtcdKv::new(client),
            KeyLayout::new(key_prefix)?,
        ))
    }

    /// Installs (or clears) the leader key every write is guarded by.
    pub fn set_leader(&self, leader: Option<LeaderKey>) {
        self.backend().set_leader(leader);
    }
}

/// etcd as a [`KvBackend`], fenced by the current leader key.
pub struct EtcdKv {
    client: Client,
    leader: Arc<RwLock<Option<LeaderKey>>>,
}

impl EtcdKv {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            leader: Arc::new(RwLock::new(None)),
        }
    }

    /// Fails [`StateError::CounterLimit`] when etcd's revision counter is at `i64::MAX` (no
    /// write could get a larger revision; etcd itself would wrap) and `Corrupt` when it is
    /// negative (it wrapped). Returns the current revision. Checked once at start.
    pub async fn check_revision_headroom(&self, location: &str) -> Result<i64, StateError> {
        let response = self
            .client
            .clone()
            .get(location, Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| unavailable("get", location, e))?;
        let revision =
            response
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| StateError::Corrupt {
                    location: location.to_owned(),
                    reason: "etcd answered without a header".to_owned(),
                })?;
        check_revision(&format!("etcd (at {location})"), revision, false)
    }

    pub fn set_leader(&self, leader: Option<LeaderKey>) {
        // A poisoned lock only means a panic elsewhere while swapping an Option: still sound.
        *self.leader.write().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    fn leader_for(&self, key: &str) -> Result<LeaderKey, StateError> {
        self.leader
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StateError::NotLeader {
                key: key.to_owned(),
            })
    }

    /// Runs a guarded transaction: `op` if the leader key and `expected` both hold;
    /// otherwise reads both back to say which one failed.
    async fn guarded(
        &self,
        operation: &'static str,
        key: &str,
        expected: Expected,
        op: TxnOp,
    ) -> Result<(i64, Vec<TxnOpResponse>), StateError> {
        let leader = self.leader_for(key)?;
        let mut compares = vec![Compare::create_revision(
            leader.key(),
            CompareOp::Equal,
            leader.rev(),
        )];
        match expected {
            Expected::Any => {}
            // A missing key compares as revision 0.
            Expected::Absent => compares.push(Compare::mod_revision(key, CompareOp::Equal, 0)),
            Expected::Revision(rev) => {
                compares.push(Compare::mod_revision(key, CompareOp::Equal, rev));
            }
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([op])
            .or_else([TxnOp::get(leader.key(), None), TxnOp::get(key, None)]);
        let response = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| unavailable(operation, key, e))?;
        let responses = response.op_responses();
        if response.succeeded() {
            // A transaction that wrote carries the revision of its writes in its header.
            let revision =
                response
                    .header()
                    .map(|h| h.revision())
                    .ok_or_else(|| StateError::Corrupt {
                        location: key.to_owned(),
                        reason: "etcd answered a transaction without a header".to_owned(),
                    })?;
            return Ok((check_revision(key, revision, true)?, responses));
        }
        let mut reads = responses.into_iter().map(|r| match r {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.create_revision(), kv.mod_revision())),
            _ => None,
        });
        let leader_now = reads.next().flatten();
        let key_now = reads.next().flatten();
        if leader_now.map(|(create, _)| create) != Some(leader.rev()) {
            return Err(StateError::Fenced {
                key: key.to_owned(),
                leader_key: String::from_utf8_lossy(leader.key()).into_owned(),
                leader_rev: leader.rev(),
            });
        }
        Err(StateError::Conflict {
            key: key.to_owned(),
            expected: match expected {
                Expected::Revision(rev) => Some(rev),
                Expected::Absent | Expected::Any => None,
            },
            actual: key_now.map(|(_, modified)| modified),
        })
    }
}

fn unavailable(operation: &'static str, key: &str, error: etcd_client::Error) -> StateError {
    StateError::Unavailable {
        operation,
        key: key.to_owned(),
        reason: error.to_string(),
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only all-0xff prefixes get here; "\0" means "to the end of the keyspace" to etcd.
    vec![0]
}

/// A key as etcd returned it. One that is not UTF-8 (written by hand: twinsite writes only
/// ASCII keys) is shown with U+FFFD in place of its bad bytes, which no key twinsite writes
/// contains: the typed store then reports it as unreadable instead of failing the listing.
fn entry_of(kv: &etcd_client::KeyValue) -> Result<(String, KvEntry), StateError> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let mod_revision = check_revision(&key, kv.mod_revision(), true)?;
    Ok((
        key,
        KvEntry {
            value: kv.value().to_vec(),
            mod_revision,
        },
    ))
}

#[async_trait]
impl KvBackend for EtcdKv {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, StateError> {
        let response = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(|e| unavailable("get", key, e))?;
        match response.kvs().first() {
            Some(kv) => Ok(Some(entry_of(kv)?.1)),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, KvEntry)>, StateError> {
        let from = start.filter(|s| *s > prefix).unwrap_or(prefix);
        let options = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let response = self
            .client
            .clone()
            .get(from, Some(options))
            .await
            .map_err(|e| unavailable("list", prefix, e))?;
        response.kvs().iter().map(entry_of).collect()
    }

    async fn last(
        &self,
        prefix: &str,
        below: Option<&str>,
    ) -> Result<Option<(String, KvEntry)>, StateError> {
        let end = match below {
            Some(below) if below.as_bytes() < prefix_end(prefix).as_slice() => {
                below.as_bytes().to_vec()
            }
            _ => prefix_end(prefix),
        };
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(1)
            .with_sort(SortTarget::Key, SortOrder::Descend);
        let response = self
            .client
            .clone()
            .get(prefix, Some(options))
            .await
            .map_err(|e| unavailable("last", prefix, e))?;
        response.kvs().first().map(entry_of).transpose()
    }

    async fn put(&self, key: &str, value: Vec<u8>, expected: Expected) -> Result<i64, StateError> {
        let (revision, _) = self
            .guarded("put", key, expected, TxnOp::put(key, value, None))
            .await?;
        Ok(revision)
    }

    async fn delete(&self, key: &str, expected: Expected) -> Result<bool, StateError> {
        let (_, responses) = self
            .guarded("delete", key, expected, TxnOp::delete(key, None))
            .await?;
        Ok(matches!(responses.first(), Some(TxnOpResponse::Delete(d)) if d.deleted() > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_range_end_of_a_prefix_covers_exactly_its_keys() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert!(b"/a/zzz".as_slice() < prefix_end("/a/").as_slice());
        assert!(b"/b".as_slice() >= prefix_end("/a/").as_slice());
    }
}
