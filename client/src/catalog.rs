//! Fetching a broadcast's MSF catalog (draft-ietf-moq-msf §5) from the relay.

use std::time::{Duration, Instant};

use moqcast_media::{
    catalog::{Catalog, CatalogError, CATALOG_TRACK_NAME},
    moq::Subscriber,
};

use crate::track::TrackSubscription;

/// Why a broadcast's catalog could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchCatalogError {
    /// No catalog arrived within the wait: the broadcast is not announced, or its catalog
    /// track delivered nothing. `reason` is the last attempt's.
    #[error("could not read the catalog of {broadcast:?} (is it being published?): {reason}")]
    Unavailable { broadcast: String, reason: String },
    /// A catalog arrived but is not a valid MSF catalog (`source` says where and why).
    #[error("the catalog of {broadcast:?} is invalid")]
    Invalid {
        broadcast: String,
        #[source]
        source: CatalogError,
    },
}

/// Reads the newest catalog of `broadcast`, retrying every 250 ms for `wait` while it is not
/// announced. The session `subscriber` belongs to must be driven meanwhile.
///
/// Cancel-safe: dropping the future ends the catalog subscription it has open.
pub async fn fetch_catalog(
    subscriber: &Subscriber,
    broadcast: &str,
    wait: Duration,
) -> Result<Catalog, FetchCatalogError> {
    let give_up = Instant::now() + wait;
    loop {
        let (mut sub, driver) = TrackSubscription::new(subscriber, broadcast, CATALOG_TRACK_NAME);
        // Outer error: the catalog could not be read (retry); inner: it was read but is invalid.
        let attempt = async {
            tokio::select! {
                res = driver => Err(format!(
                    "catalog subscription ended: {}",
                    res.err().map(|e| e.to_string()).unwrap_or_else(|| "no catalog".into())
                )),
                obj = sub.next() => match obj {
                    Ok(Some(o)) => Ok(Catalog::parse(&o.payload)),
                    Ok(None) => Err("catalog track ended without a catalog".to_string()),
                    Err(e) => Err(format!("catalog subscription failed: {e}")),
                },
            }
        };
        match attempt.await {
            Ok(parsed) => {
                return parsed.map_err(|source| FetchCatalogError::Invalid {
                    broadcast: broadcast.to_string(),
                    source,
                });
            }
            Err(reason) if Instant::now() < give_up => {
                tracing::debug!(error = %reason, "catalog not available yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(reason) => {
                return Err(FetchCatalogError::Unavailable {
                    broadcast: broadcast.to_string(),
                    reason,
                })
            }
        }
    }
}
