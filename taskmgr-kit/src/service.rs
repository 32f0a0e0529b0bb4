//! The plugin interface: each call of the `TaskManager` trait translated into a call on the
//! core, and its error into the documented gRPC status.

use crate::backend::Backend;
use crate::host::Host;
use crate::{EventStream, TaskManager};
use tonic::{Request, Response, Status};
use xeno_schemas::proto::taskmanager::v1 as pb;

#[tonic::async_trait]
impl<B: Backend> TaskManager for Host<B> {
    type StreamOutputStream = EventStream;

    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        Ok(Response::new(self.capabilities()))
    }

    async fn create_domain(
        &self,
        request: Request<pb::CreateDomainRequest>,
    ) -> Result<Response<pb::CreateDomainResponse>, Status> {
        Ok(Response::new(
            self.create_domain(request.into_inner()).await?,
        ))
    }

    async fn deploy_task(
        &self,
        request: Request<pb::DeployTaskRequest>,
    ) -> Result<Response<pb::DeployTaskResponse>, Status> {
        self.deploy_task(request.into_inner()).await?;
        Ok(Response::new(pb::DeployTaskResponse {}))
    }

    async fn stream_output(
        &self,
        request: Request<pb::StreamOutputRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(Response::new(self.stream_output(request.into_inner())?))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        Ok(Response::new(self.report_usage(request.into_inner())?))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        self.stop_task(request.into_inner()).await?;
        Ok(Response::new(pb::StopTaskResponse {}))
    }

    async fn destroy_domain(
        &self,
        request: Request<pb::DestroyDomainRequest>,
    ) -> Result<Response<pb::DestroyDomainResponse>, Status> {
        let usage = self.destroy_domain(request.into_inner()).await?;
        Ok(Response::new(pb::DestroyDomainResponse {
            usage: Some(usage),
        }))
    }

    async fn inspect_task(
        &self,
        request: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        Ok(Response::new(self.inspect_task(request.into_inner())?))
    }
}
