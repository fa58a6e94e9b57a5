//! Kube's tower-test mock played as the API server: named calls in order,
//! each awaited with a timeout so a call that never comes fails, the exact
//! path, query, content type and body asserted, then no more requests.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and the answer to give.
pub struct Call {
    pub method: &'static str,
    pub path_and_query: String,
    /// The exact JSON body expected, when there is one to check.
    pub body: Option<Value>,
    pub status: u16,
    pub reply: Value,
}

impl Call {
    /// With the exact JSON body expected (its content type follows from
    /// the method: a JSON Patch for a PATCH of a list).
    pub fn with_body(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }
}

pub fn call(method: &'static str, path_and_query: &str, status: u16, reply: Value) -> Call {
    Call {
        method,
        path_and_query: path_and_query.into(),
        body: None,
        status,
        reply,
    }
}

/// Plays the API server: each call in order, then no more requests.
pub async fn scenario(mut handle: Handle, calls: Vec<Call>) {
    for expected in calls {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "expected {} {} never came",
                        expected.method, expected.path_and_query
                    )
                })
                .expect("the client went away");
        assert_eq!(request.method().as_str(), expected.method);
        assert_eq!(
            request.uri().path_and_query().unwrap().as_str(),
            expected.path_and_query
        );
        let content_type = request
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        if let Some(body) = expected.body {
            let wanted = match (expected.method, body.is_array()) {
                ("PATCH", true) => "application/json-patch+json",
                ("PATCH", false) => "application/merge-patch+json",
                _ => "application/json",
            };
            assert_eq!(content_type.as_deref(), Some(wanted));
            assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), body);
        }
        respond.send_response(
            Response::builder()
                .status(expected.status)
                .body(Body::from(serde_json::to_vec(&expected.reply).unwrap()))
                .unwrap(),
        );
    }
    let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(
        extra.is_err() || extra.unwrap().is_none(),
        "an unexpected extra request"
    );
}

/// A Kubernetes `Status` answer.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message})
}
