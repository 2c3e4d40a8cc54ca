//! The requests to S3 that `object_store` makes only unconditionally: completing a multipart
//! upload (with `If-Match` or `If-None-Match: *`) and deleting an object (with `If-Match`).
//!
//! Each is presigned with the store's own credentials ([`Signer::signed_url_opts`], the
//! condition bound to the signature as a signed header) and sent with `reqwest`, with the same
//! header. It owns sending them, retrying what S3 did not apply, and reading the answer
//! (including S3's `200 OK` whose body is an `<Error>`); it does not decide which condition a
//! request carries ([`super::fence`] does). A presigned URL carries a signature and perhaps a
//! session token: it is never shown, logged or kept in an error, which quote S3's error code and
//! message only.

use std::sync::Arc;
use std::time::Duration;

use object_store::UpdateVersion;
use object_store::aws::AmazonS3;
use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
use reqwest::StatusCode;

use super::MAX_RETRIES;
use super::fence::{Expect, Fail};
use crate::dataset::xml_tag;

/// How long a presigned URL stays valid: covers every retry of one request.
const PRESIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Connecting to S3 fails after this long (as `object_store`'s default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// S3 may take minutes to assemble a large object; it keeps the connection alive meanwhile.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A delete is answered at once.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause between attempts, doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Error codes in a `200 OK` answer to CompleteMultipartUpload that S3 says to retry.
const RETRY_CODES: [&str; 3] = ["InternalError", "SlowDown", "ServiceUnavailable"];
/// Error codes that mean the condition failed: another export changed the object.
const CHANGED_CODES: [&str; 3] = [
    "PreconditionFailed",
    "ConditionalRequestConflict",
    "NoSuchKey",
];

/// The S3 store, and a client for the requests it presigns.
#[derive(Clone)]
pub(super) struct S3Direct {
    pub(super) store: Arc<AmazonS3>,
    http: reqwest::Client,
}

/// One answer of S3.
struct Answer {
    status: StatusCode,
    /// `x-amz-version-id`, in versioned buckets.
    version: Option<String>,
    body: String,
    /// An earlier attempt of the same request may have been applied, its answer lost.
    after_lost_answer: bool,
}

/// What to do with an answer.
enum Verdict<T> {
    Done(T),
    Retry(String),
    Fail(Fail),
}

impl S3Direct {
    pub(super) fn new(store: Arc<AmazonS3>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self { store, http })
    }

    /// Completes upload `id` of `location` with `parts` (in order), only if the object still is
    /// as `expect` says; returns the new object's version.
    pub(super) async fn complete(
        &self,
        location: &ObjectPath,
        id: &str,
        parts: &[PartId],
        expect: &Expect,
    ) -> Result<UpdateVersion, Fail> {
        let (name, value) = condition(expect)?;
        let options = SignedUrlOptions::default()
            .with_query([("uploadId", id)])
            .with_signed_header(name.clone(), value.clone());
        let url = self.presign(Method::POST, location, &options).await?;
        let body = complete_body(parts);
        let request = || {
            self.http
                .post(url.clone())
                .header(name.clone(), value.clone())
                .header("content-type", "application/xml")
                .timeout(COMPLETE_TIMEOUT)
                .body(body.clone())
        };
        self.send("CompleteMultipartUpload", request, judge_complete)
            .await
    }

    /// Deletes `location` if its ETag is still `e_tag`. `false`: the store does not do
    /// conditional deletes (an S3-compatible one answering 501), nothing was deleted.
    pub(super) async fn delete_if_match(
        &self,
        location: &ObjectPath,
        e_tag: &str,
    ) -> Result<bool, Fail> {
        let name = HeaderName::from_static("if-match");
        let value = header_value(e_tag)?;
        let options = SignedUrlOptions::default().with_signed_header(name.clone(), value.clone());
        let url = self.presign(Method::DELETE, location, &options).await?;
        let request = || {
            self.http
                .delete(url.clone())
                .header(name.clone(), value.clone())
                .timeout(DELETE_TIMEOUT)
        };
        self.send("DeleteObject", request, judge_delete).await
    }

    async fn presign(
        &self,
        method: Method,
        location: &ObjectPath,
        options: &SignedUrlOptions,
    ) -> Result<reqwest::Url, Fail> {
        self.store
            .signed_url_opts(method, location, PRESIGNED_FOR, options)
            .await
            .map_err(Fail::Store)
    }

    /// Sends `request` until `judge` settles it or the retries run out.
    async fn send<T>(
        &self,
        operation: &'static str,
        request: impl Fn() -> reqwest::RequestBuilder,
        judge: fn(&'static str, Answer) -> Verdict<T>,
    ) -> Result<T, Fail> {
        let mut after_lost_answer = false;
        let mut last = String::new();
        for attempt in 0..=MAX_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempt as u32 - 1)).await;
            }
            let answer = match request().send().await {
                Ok(response) => read_answer(response, after_lost_answer).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(answer) => match judge(operation, answer) {
                    Verdict::Done(done) => return Ok(done),
                    Verdict::Fail(fail) => return Err(fail),
                    Verdict::Retry(why) => last = why,
                },
                Err(e) => {
                    // Refused before it was sent, or sent and perhaps applied.
                    after_lost_answer |= !e.is_connect();
                    last = format!(
                        "error sending request: {}",
                        crate::dataset::unrepeated_chain(&e.without_url())
                    );
                }
            }
            tracing::debug!(target: "dataset", operation, attempt, error = %last, "retrying an S3 request");
        }
        Err(store_error(format!(
            "{operation} failed after {MAX_RETRIES} retries: {last}"
        )))
    }
}

async fn read_answer(
    response: reqwest::Response,
    after_lost_answer: bool,
) -> Result<Answer, reqwest::Error> {
    let status = response.status();
    let version = response
        .headers()
        .get("x-amz-version-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await?;
    Ok(Answer {
        status,
        version,
        body,
        after_lost_answer,
    })
}

/// The signed header that makes a request conditional on `expect`.
fn condition(expect: &Expect) -> Result<(HeaderName, HeaderValue), Fail> {
    match expect {
        Expect::Absent => Ok((
            HeaderName::from_static("if-none-match"),
            HeaderValue::from_static("*"),
        )),
        Expect::Version(UpdateVersion {
            e_tag: Some(e_tag), ..
        }) => Ok((HeaderName::from_static("if-match"), header_value(e_tag)?)),
        _ => Err(store_error(
            "a conditional request needs an ETag, and the store gave none".to_owned(),
        )),
    }
}

fn header_value(e_tag: &str) -> Result<HeaderValue, Fail> {
    HeaderValue::from_str(e_tag)
        .map_err(|_| store_error("the store gave an ETag that is not a valid header".to_owned()))
}

fn judge_complete(operation: &'static str, answer: Answer) -> Verdict<UpdateVersion> {
    let code = xml_tag(&answer.body, "Code");
    let code = code.as_deref();
    let failed_in_body = answer.body.contains("<Error>");
    let changed = code.is_some_and(|c| CHANGED_CODES.contains(&c));
    match answer.status {
        // S3 answers 200 before it assembles the object; a failure then comes in the body.
        StatusCode::OK if failed_in_body && code.is_some_and(|c| RETRY_CODES.contains(&c)) => {
            Verdict::Retry(describe(operation, &answer))
        }
        StatusCode::OK if failed_in_body && changed => Verdict::Fail(Fail::Changed),
        StatusCode::OK if failed_in_body => Verdict::Fail(refused(operation, &answer)),
        StatusCode::OK => match xml_tag(&answer.body, "ETag") {
            Some(e_tag) => Verdict::Done(UpdateVersion {
                e_tag: Some(unescape(&e_tag)),
                version: answer.version,
            }),
            None => Verdict::Fail(store_error(format!(
                "{operation} answered 200 OK without an ETag"
            ))),
        },
        status if transient(status) => Verdict::Retry(describe(operation, &answer)),
        // Perhaps our own earlier attempt completed it: not known to be another export's.
        _ if answer.after_lost_answer => Verdict::Fail(store_error(format!(
            "{operation} was not confirmed: an earlier attempt's answer was lost and the retry was answered {}",
            answer.status
        ))),
        StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Verdict::Fail(Fail::Changed),
        StatusCode::NOT_FOUND if changed => Verdict::Fail(Fail::Changed),
        _ => Verdict::Fail(refused(operation, &answer)),
    }
}

fn judge_delete(operation: &'static str, answer: Answer) -> Verdict<bool> {
    match answer.status {
        status if status.is_success() => Verdict::Done(true),
        // Our earlier attempt deleted it.
        StatusCode::NOT_FOUND if answer.after_lost_answer => Verdict::Done(true),
        StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT | StatusCode::NOT_FOUND => {
            Verdict::Fail(Fail::Changed)
        }
        StatusCode::NOT_IMPLEMENTED => Verdict::Done(false),
        status if transient(status) => Verdict::Retry(describe(operation, &answer)),
        _ => Verdict::Fail(refused(operation, &answer)),
    }
}

fn transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `CompleteMultipartUpload answered 403 Forbidden <Error><Code>…` with only S3's code and
/// message kept from the body (its other fields can quote the signed request).
fn describe(operation: &str, answer: &Answer) -> String {
    let mut text = format!("{operation} answered {}", answer.status);
    if let Some(code) = xml_tag(&answer.body, "Code") {
        let message = xml_tag(&answer.body, "Message").unwrap_or_default();
        text.push_str(&format!(
            " <Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ));
    }
    text
}

fn refused(operation: &str, answer: &Answer) -> Fail {
    let text = describe(operation, answer);
    Fail::Store(match answer.status {
        StatusCode::FORBIDDEN => object_store::Error::PermissionDenied {
            path: String::new(),
            source: text.into(),
        },
        _ => object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        },
    })
}

fn store_error(text: String) -> Fail {
    Fail::Store(object_store::Error::Generic {
        store: "S3",
        source: text.into(),
    })
}

/// The CompleteMultipartUpload request body: every part in order with its ETag (and checksum,
/// when `object_store` computed one: then a part's id is its own small XML record).
fn complete_body(parts: &[PartId]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (index, part) in parts.iter().enumerate() {
        let id = &part.content_id;
        let field = |tag: &str| xml_tag(id, tag).map(|v| unescape(&v));
        let e_tag = match id.starts_with('<') {
            true => field("e_tag").unwrap_or_default(),
            false => id.clone(),
        };
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
            index + 1,
            escape(&e_tag)
        ));
        for (tag, element) in [
            ("checksum_sha256", "ChecksumSHA256"),
            ("checksum_crc64nvme", "ChecksumCRC64NVME"),
        ] {
            if let Some(value) = field(tag).filter(|_| id.starts_with('<')) {
                body.push_str(&format!("<{element}>{}</{element}>", escape(&value)));
            }
        }
        body.push_str("</Part>");
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, after_lost_answer: bool) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            version: None,
            body: body.to_owned(),
            after_lost_answer,
        }
    }

    #[test]
    fn the_complete_body_lists_parts_in_order_with_their_etags_and_checksums() {
        let parts = [
            PartId {
                content_id: "\"aa\"".to_owned(),
            },
            PartId {
                content_id: "<PartMetadata><e_tag>&quot;bb&quot;</e_tag><checksum_sha256>c2E=</checksum_sha256></PartMetadata>".to_owned(),
            },
        ];
        assert_eq!(
            complete_body(&parts),
            "<CompleteMultipartUpload>\
             <Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>&quot;bb&quot;</ETag><ChecksumSHA256>c2E=</ChecksumSHA256></Part>\
             </CompleteMultipartUpload>"
        );
    }

    #[test]
    fn completion_answers_are_judged_by_status_and_by_the_error_in_a_200_body() {
        let done = r#"<CompleteMultipartUploadResult><ETag>&quot;ab-3&quot;</ETag></CompleteMultipartUploadResult>"#;
        let error = |code: &str| format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
        let judge =
            |status, body: &str, lost| judge_complete("Complete", answer(status, body, lost));
        assert!(matches!(
            judge(200, done, false),
            Verdict::Done(UpdateVersion { e_tag: Some(e), .. }) if e == "\"ab-3\""
        ));
        assert!(matches!(
            judge(200, &error("InternalError"), false),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            judge(200, &error("PreconditionFailed"), false),
            Verdict::Fail(Fail::Changed)
        ));
        assert!(matches!(
            judge(200, &error("InvalidPart"), false),
            Verdict::Fail(Fail::Store(_))
        ));
        assert!(matches!(
            judge(200, "", false),
            Verdict::Fail(Fail::Store(_))
        ));
        for status in [409, 412] {
            assert!(matches!(
                judge(status, "", false),
                Verdict::Fail(Fail::Changed)
            ));
            // After a lost answer, a refusal may be our own completion: not called a takeover.
            assert!(matches!(
                judge(status, "", true),
                Verdict::Fail(Fail::Store(_))
            ));
        }
        assert!(matches!(
            judge(404, &error("NoSuchKey"), false),
            Verdict::Fail(Fail::Changed)
        ));
        assert!(matches!(
            judge(404, &error("NoSuchUpload"), false),
            Verdict::Fail(Fail::Store(_))
        ));
        assert!(matches!(
            judge(503, &error("SlowDown"), false),
            Verdict::Retry(_)
        ));
        let Verdict::Fail(Fail::Store(e)) = judge(403, &error("AccessDenied"), false) else {
            panic!("403 is a store error");
        };
        assert!(matches!(e, object_store::Error::PermissionDenied { .. }));
    }

    #[test]
    fn delete_answers_tell_a_change_from_a_delete_that_landed_unanswered() {
        let judge = |status, lost| judge_delete("Delete", answer(status, "", lost));
        assert!(matches!(judge(204, false), Verdict::Done(true)));
        assert!(matches!(judge(412, false), Verdict::Fail(Fail::Changed)));
        assert!(matches!(judge(404, false), Verdict::Fail(Fail::Changed)));
        assert!(matches!(judge(404, true), Verdict::Done(true)));
        assert!(matches!(judge(501, false), Verdict::Done(false)));
        assert!(matches!(judge(500, false), Verdict::Retry(_)));
    }

    #[test]
    fn described_answers_keep_only_the_code_and_message() {
        let body = "<Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message><CanonicalRequest>POST /b/k uploadId=1&amp;X-Amz-Security-Token=tok</CanonicalRequest></Error>";
        let text = describe("CompleteMultipartUpload", &answer(403, body, false));
        assert_eq!(
            text,
            "CompleteMultipartUpload answered 403 Forbidden <Error><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error>"
        );
    }
}
