//! The plugin interface: each call of the `TaskManager` trait translated into a call on the
//! core, and its error into the documented gRPC status.

use crate::manager::VmTaskManager;
use tonic::{Request, Response, Status};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_schemas::taskmanager::{EventStream, TaskManager};

#[tonic::async_trait]
impl TaskManager for VmTaskManager {
    type StreamOutputStream = EventStream;

    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        Ok(Response::new(self.core.capabilities()))
    }

    async fn create_domain(
        &self,
        request: Request<pb::CreateDomainRequest>,
    ) -> Result<Response<pb::CreateDomainResponse>, Status> {
        Ok(Response::new(
            self.core.create_domain(request.into_inner()).await?,
        ))
    }

    async fn deploy_task(
        &self,
        request: Request<pb::DeployTaskRequest>,
    ) -> Result<Response<pb::DeployTaskResponse>, Status> {
        self.core.deploy_task(request.into_inner()).await?;
        Ok(Response::new(pb::DeployTaskResponse {}))
    }

    async fn stream_output(
        &self,
        request: Request<pb::StreamOutputRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(Response::new(
            self.core.stream_output(request.into_inner())?,
        ))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        Ok(Response::new(self.core.report_usage(request.into_inner())?))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        self.core.stop_task(request.into_inner()).await?;
        Ok(Response::new(pb::StopTaskResponse {}))
    }

    async fn destroy_domain(
        &self,
        request: Request<pb::DestroyDomainRequest>,
    ) -> Result<Response<pb::DestroyDomainResponse>, Status> {
        let usage = self.core.destroy_domain(request.into_inner()).await?;
        Ok(Response::new(pb::DestroyDomainResponse {
            usage: Some(usage),
        }))
    }

    async fn inspect_task(
        &self,
        request: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        Ok(Response::new(self.core.inspect_task(request.into_inner())?))
    }
}
