//! The `xenoserve.xis.v1.Xis` gRPC service: translates protobuf messages into calls on the
//! [`Xis`] core and back. No rule lives here.

use crate::core::{LookupQuery, Values, Xis};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use xeno_schemas::proto::xis::v1 as pb;

/// The XIS service.
pub struct XisService {
    core: Arc<Xis>,
}

impl XisService {
    /// A service over `core`.
    pub fn new(core: Arc<Xis>) -> Self {
        XisService { core }
    }
}

impl From<pb::LookupRequest> for LookupQuery {
    /// The core's lookup query from a request.
    fn from(request: pb::LookupRequest) -> LookupQuery {
        let values = match request.values {
            Some(pb::lookup_request::Values::Range(range)) => Values::Range {
                min: range.min,
                max: range.max,
            },
            Some(pb::lookup_request::Values::Exact(value)) => Values::Exact(value),
            None => Values::Any,
        };
        LookupQuery {
            token: request.token,
            values,
            page_size: request.page_size,
            cursor: request.cursor,
            include_stale: request.include_stale,
        }
    }
}

#[tonic::async_trait]
impl pb::xis_server::Xis for XisService {
    async fn advertise(
        &self,
        request: Request<pb::AdvertiseRequest>,
    ) -> Result<Response<pb::AdvertiseResponse>, Status> {
        let advertised = self
            .core
            .advertise(request.into_inner().advertisement_xml)
            .await?;
        Ok(Response::new(pb::AdvertiseResponse {
            server_id: advertised.server_id,
            version: advertised.version,
            tokens: advertised.tokens,
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let page = self.core.lookup(&request.into_inner().into()).await?;
        Ok(Response::new(pb::LookupResponse {
            total_matches: page.total_matches,
            matches: page
                .matches
                .into_iter()
                .map(|found| pb::LookupMatch {
                    server_id: found.server_id,
                    value: found.value,
                    version: found.version,
                    age_ms: found.age_ms,
                    stale: found.stale,
                    endpoint: found.endpoint,
                })
                .collect(),
            next_cursor: page.next_cursor,
        }))
    }

    async fn get_advertisement(
        &self,
        request: Request<pb::GetAdvertisementRequest>,
    ) -> Result<Response<pb::GetAdvertisementResponse>, Status> {
        let stored = self.core.get(&request.into_inner().server_id).await?;
        Ok(Response::new(pb::GetAdvertisementResponse {
            advertisement_xml: stored.xml,
            age_ms: stored.age_ms,
            stale: stored.stale,
        }))
    }
}
