//! Requests the transport could not decode, answered as the protos promise.

use tonic::codegen::http;

/// A layer for gRPC servers: requests the transport could not decode are answered
/// INVALID_ARGUMENT, as the protos promise, where tonic says OUT_OF_RANGE ("decoded message
/// length too large", a message over the server's size limit) or INTERNAL ("failed to decode
/// Protobuf message", such as a string that is not UTF-8). The message is kept. Our services
/// never answer OUT_OF_RANGE themselves, so only the transport's answers change.
#[derive(Debug, Clone, Copy, Default)]
pub struct InvalidRequests;

impl<S> tower::Layer<S> for InvalidRequests {
    type Service = InvalidRequestsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvalidRequestsService(inner)
    }
}

/// The service [`InvalidRequests`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct InvalidRequestsService<S>(S);

type Reclassify<B> = fn(http::Response<B>) -> http::Response<B>;

impl<S, R, B> tower::Service<R> for InvalidRequestsService<S>
where
    S: tower::Service<R, Response = http::Response<B>>,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, Reclassify<B>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        use futures::TryFutureExt;
        self.0.call(request).map_ok(reclassify as Reclassify<B>)
    }
}

/// Rewrites a trailers-only answer the transport made for an undecodable request.
fn reclassify<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok());
    let message = headers
        .get("grpc-message")
        .map(|value| percent_decoded(value.as_bytes()))
        .unwrap_or_default();
    if code.is_some_and(|code| undecodable(tonic::Code::from(code), &message)) {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
        );
    }
    response
}

/// Whether a status with `code` and `message` is the transport's answer to a request message
/// it could not decode.
fn undecodable(code: tonic::Code, message: &str) -> bool {
    match code {
        tonic::Code::OutOfRange => message.contains("message length too large"),
        tonic::Code::Internal => message.starts_with("failed to decode Protobuf message"),
        _ => false,
    }
}

/// For a service reading a stream of requests: INVALID_ARGUMENT (with the transport's words)
/// when `status` is the transport's refusal of a message it could not decode; `None` when the
/// stream broke for another reason.
pub fn undecodable_request(status: &tonic::Status) -> Option<tonic::Status> {
    undecodable(status.code(), status.message())
        .then(|| tonic::Status::invalid_argument(status.message()))
}

/// A `grpc-message` value with its `%XX` escapes decoded (lossily, for matching).
fn percent_decoded(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
