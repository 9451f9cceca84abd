"""An XML-API front for gcp-storage-emulator, for tests/object_stores.rs.

`gcp-storage-emulator` (PyPI) implements Google Cloud Storage's JSON API; the Rust
`object_store` crate's GCS client speaks the XML API: object GET (with ranges and
conditional headers) and HEAD, PUT (create-only with `x-goog-if-generation-match: 0`,
copies with `x-goog-copy-source`), DELETE, `list-type=2` listings, and S3-style
multipart uploads. This server speaks that subset on 127.0.0.1 and does each request
through the emulator's JSON API, so the emulator holds every byte (multipart parts
stay here until the upload completes). Standard library only. Run:

    gcp-storage-emulator start --host 127.0.0.1 --port 9023 --in-memory -q
    python gcs_front.py --listen 127.0.0.1:9024 --emulator http://127.0.0.1:9023

It prints `ready` once listening. `PUT /BUCKET` (no object) makes a bucket.

Emulator quirks handled here: it has no preconditions (ifGenerationMatch), so every
exchange with it happens under one lock, which also keeps a metadata look-up and the
download after it consistent (the emulator serves one request at a time anyway); a
media upload of zero bytes crashes its handler, and a JSON or multipart Content-Type
makes it parse the body, so those go up as multipart uploads; its listings are never
paginated, so pagination happens here; it reports md5Hash in base64, and the ETag
here is the hex MD5 as real GCS gives it.
"""
import argparse
import base64
import email.utils
import hashlib
import json
import sys
import threading
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

EMULATOR = ""
EMULATOR_LOCK = threading.Lock()  # held around every exchange with the emulator
UPLOADS = {}  # multipart upload id -> {"bucket", "name", "type", "parts": {n: bytes}}
XML_HEAD = "<?xml version='1.0' encoding='UTF-8'?>"


def quote(name):
    return urllib.parse.quote(name, safe="")


def call(method, path, body=None, headers=None):
    """(status, response headers, bytes) of one JSON API request to the emulator."""
    req = urllib.request.Request(EMULATOR + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def object_path(bucket, name):
    return f"/storage/v1/b/{quote(bucket)}/o/{quote(name)}"


def metadata(bucket, name):
    status, _, body = call("GET", object_path(bucket, name))
    return json.loads(body) if status == 200 else None


def download(bucket, name, headers=None):
    status, _, data = call("GET", object_path(bucket, name) + "?alt=media", headers=headers)
    return data if status in (200, 206) else None


def bucket_exists(bucket):
    return call("GET", f"/storage/v1/b/{quote(bucket)}")[0] == 200


def upload(bucket, name, data, content_type):
    """Store an object; (status, its JSON metadata or None)."""
    path = f"/upload/storage/v1/b/{quote(bucket)}/o?name={quote(name)}&uploadType="
    if data and not content_type.startswith(("application/json", "multipart/")):
        status, _, body = call("POST", path + "media", data, {"Content-Type": content_type})
    else:
        boundary = uuid.uuid4().hex
        meta = json.dumps({"name": name, "contentType": content_type})
        body = (
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{meta}\r\n"
            f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/related; boundary={boundary}"}
        status, _, body = call("POST", path + "multipart", body, headers)
    return status, json.loads(body) if status == 200 else None


def etag(meta):
    md5 = meta.get("md5Hash")
    return '"{}"'.format(base64.b64decode(md5).hex() if md5 else meta.get("generation"))


def updated(meta):
    return datetime.fromisoformat(meta["updated"].replace("Z", "+00:00"))


def byte_range(header, size):
    """(start, end inclusive) asked for by a Range header; None for the whole object;
    ValueError if it cannot be satisfied."""
    unit, _, spec = (header or "").partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec or not (first + last).isdigit():
        return None  # absent or not understood: the whole object, as RFC 9110 allows
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    if start >= size or start > end:
        raise ValueError(header)
    return start, end


def same_tag(header, tag):
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or tag.strip('"') in tags


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # -- plumbing ---------------------------------------------------------------
    def target(self):
        """(bucket, object name or None, query) from the request line."""
        url = urllib.parse.urlsplit(self.path)
        bucket, _, name = url.path.lstrip("/").partition("/")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        return (
            urllib.parse.unquote(bucket),
            urllib.parse.unquote(name) or None,
            {k: v[0] for k, v in query.items()},
        )

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return data
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, data=b"", headers=None, length=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def xml(self, status, xml, headers=None):
        headers = {**(headers or {}), "Content-Type": "application/xml; charset=UTF-8"}
        self.reply(status, (XML_HEAD + xml).encode(), headers)

    def error(self, status, code, message, headers=None):
        xml = f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        self.xml(status, xml, headers)

    def no_bucket(self, bucket):
        self.error(404, "NoSuchBucket", f"The specified bucket does not exist: {bucket}")

    def missing(self, bucket, name):
        with EMULATOR_LOCK:
            known = bucket_exists(bucket)
        if known:
            return self.error(404, "NoSuchKey", f"No such object: {bucket}/{name}")
        self.no_bucket(bucket)

    def guarded(self, action):
        bucket, name, query = self.target()
        try:
            if not bucket:
                self.body()
                return self.error(400, "InvalidURI", "no bucket in the path")
            action(bucket, name, query)
        except ConnectionError:  # the client went away
            self.close_connection = True
        except Exception as e:  # the emulator is down or answered something unexpected
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self.error(500, "InternalError", f"gcs_front: {e!r}")

    def do_GET(self):
        self.guarded(self.get)

    def do_HEAD(self):
        self.guarded(self.get)

    def do_PUT(self):
        self.guarded(self.put)

    def do_POST(self):
        self.guarded(self.post)

    def do_DELETE(self):
        self.guarded(self.delete)

    @staticmethod
    def object_headers(meta):
        return {
            "ETag": etag(meta),
            "Last-Modified": email.utils.format_datetime(updated(meta), usegmt=True),
            "x-goog-generation": str(meta.get("generation", "1")),
            "x-goog-metageneration": str(meta.get("metageneration", "1")),
            "Content-Type": meta.get("contentType") or "application/octet-stream",
        }

    # -- reads ------------------------------------------------------------------
    def get(self, bucket, name, query):
        if name is None:
            if self.command == "GET":
                return self.list(bucket, query)
            with EMULATOR_LOCK:
                known = bucket_exists(bucket)
            return self.reply(200) if known else self.no_bucket(bucket)
        with EMULATOR_LOCK:
            meta = metadata(bucket, name)
            if meta is not None and query.get("generation") not in (None, meta.get("generation")):
                meta = None  # the emulator keeps only the live generation
            if meta is not None:
                status, headers, data = self.read(bucket, name, meta)
        if meta is None:
            return self.missing(bucket, name)
        if status == 412:
            return self.error(412, "PreconditionFailed", "A precondition was not met", headers)
        if status == 416:
            return self.error(416, "InvalidRange", self.headers["Range"], headers)
        if data is None:  # HEAD, or 304 Not Modified
            length = int(meta["size"]) if status == 200 else 0
            return self.reply(status, headers=headers, length=length)
        self.reply(status, data, headers)

    def read(self, bucket, name, meta):
        """(status, headers, body or None) answering a GET or HEAD of an object."""
        headers, size = self.object_headers(meta), int(meta["size"])
        unmet = self.unmet(meta)
        if unmet:
            return unmet, headers, None
        try:
            wanted = byte_range(self.headers.get("Range"), size)
        except ValueError:
            headers["Content-Range"] = f"bytes */{size}"
            return 416, headers, None
        if self.command == "HEAD":
            return 200, headers, None
        data = download(bucket, name, {"Range": "bytes={}-{}".format(*wanted)} if wanted else {})
        if data is None:
            raise RuntimeError(f"the emulator has metadata for {bucket}/{name} but no bytes")
        if not wanted:
            return 200, headers, data
        start, end = wanted
        if len(data) != end - start + 1:
            raise RuntimeError(f"asked the emulator for bytes {start}-{end}, got {len(data)} bytes")
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, headers, data

    def unmet(self, meta):
        """304 or 412 when the request's conditional headers are not met, else None."""
        tag, modified = etag(meta), updated(meta).replace(microsecond=0)
        h = self.headers
        date = lambda header: email.utils.parsedate_to_datetime(h[header])  # noqa: E731
        if h.get("If-Match") and not same_tag(h["If-Match"], tag):
            return 412
        if h.get("If-Unmodified-Since") and modified > date("If-Unmodified-Since"):
            return 412
        if h.get("If-None-Match"):
            return 304 if same_tag(h["If-None-Match"], tag) else None
        if h.get("If-Modified-Since") and modified <= date("If-Modified-Since"):
            return 304
        return None

    def list(self, bucket, query):
        """An S3 ListObjectsV2-shaped listing (as object_store parses GCS's)."""
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        params = {k: v for k, v in (("prefix", prefix), ("delimiter", delimiter)) if v}
        path = f"/storage/v1/b/{quote(bucket)}/o?" + urllib.parse.urlencode(params)
        with EMULATOR_LOCK:
            status, _, body = call("GET", path)
        if status == 404:
            return self.no_bucket(bucket)
        if status != 200:
            raise RuntimeError(f"emulator listing answered {status}")
        listing = json.loads(body)
        entries = [(o["name"], o) for o in listing.get("items") or []]
        entries += [(p, None) for p in listing.get("prefixes") or []]
        entries.sort(key=lambda e: e[0])
        after = query.get("continuation-token") or query.get("start-after")
        if after:
            entries = [e for e in entries if e[0] > after]
        limit = max(int(query.get("max-keys") or 1000), 1)
        page, truncated = entries[:limit], len(entries) > limit
        xml = [
            f"<ListBucketResult><Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
            f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
        ]
        if delimiter:
            xml.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        for key, o in page:
            if o is None:
                xml.append(f"<CommonPrefixes><Prefix>{escape(key)}</Prefix></CommonPrefixes>")
            else:
                xml.append(
                    f"<Contents><Key>{escape(key)}</Key><Size>{o['size']}</Size>"
                    f"<LastModified>{o['updated']}</LastModified>"
                    f"<ETag>{escape(etag(o))}</ETag></Contents>"
                )
        if truncated:  # the token is the last name on this page
            xml.append(f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>")
        self.xml(200, "".join(xml) + "</ListBucketResult>")

    # -- writes -----------------------------------------------------------------
    def put(self, bucket, name, query):
        data = self.body()
        if name is None:  # make a bucket (already having it is fine)
            spec = json.dumps({"name": bucket}).encode()
            with EMULATOR_LOCK:
                status, _, _ = call(
                    "POST", "/storage/v1/b?project=test", spec, {"Content-Type": "application/json"}
                )
            if status in (200, 409):
                return self.reply(200)
            return self.error(400, "InvalidBucketName", bucket)
        if "uploadId" in query:
            upload_ = UPLOADS.get(query["uploadId"])
            if upload_ is None:
                return self.error(404, "NoSuchUpload", query["uploadId"])
            upload_["parts"][int(query["partNumber"])] = data
            return self.reply(200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        source = self.headers.get("x-goog-copy-source")
        if source:
            src_bucket, _, src_name = urllib.parse.unquote(source).lstrip("/").partition("/")
            self.write(bucket, name, None, content_type, source=(src_bucket, src_name))
        else:
            self.write(bucket, name, data, content_type)

    def write(self, bucket, name, data, content_type, source=None, result=None):
        """Store an object, honouring x-goog-if-generation-match (0: create only)."""
        match = self.headers.get("x-goog-if-generation-match")
        with EMULATOR_LOCK:
            if source:
                src, data = metadata(*source), download(*source)
                if src is None or data is None:
                    return self.error(404, "NoSuchKey", "No such object: {}/{}".format(*source))
                content_type = src.get("contentType") or content_type
            if match is not None:
                current = metadata(bucket, name)
                if (current or {}).get("generation", "0") != match:
                    message = f"{bucket}/{name}: generation is not {match}"
                    return self.error(412, "PreconditionFailed", message)
            status, meta = upload(bucket, name, data, content_type)
        if meta is None:
            if status == 404:
                return self.no_bucket(bucket)
            raise RuntimeError(f"emulator upload answered {status}")
        headers = self.object_headers(meta)
        if source:
            result = (
                "<CopyObjectResult><LastModified>{updated}</LastModified>"
                "<ETag>{etag}</ETag></CopyObjectResult>"
            )
        if result:  # an XML body with the new object's ETag (names are escaped already)
            result = result.replace("{etag}", escape(headers["ETag"]))
            return self.xml(200, result.replace("{updated}", meta["updated"]), headers)
        self.reply(200, headers=headers)

    def post(self, bucket, name, query):
        data = self.body()
        if name is not None and "uploads" in query:
            with EMULATOR_LOCK:
                known = bucket_exists(bucket)
            if not known:
                return self.no_bucket(bucket)
            upload_id = uuid.uuid4().hex
            content_type = self.headers.get("Content-Type") or "application/octet-stream"
            UPLOADS[upload_id] = {"bucket": bucket, "name": name, "type": content_type, "parts": {}}
            return self.xml(200, (
                f"<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
                f"<Key>{escape(name)}</Key><UploadId>{upload_id}</UploadId>"
                "</InitiateMultipartUploadResult>"
            ))
        if name is not None and "uploadId" in query:
            upload_ = UPLOADS.get(query["uploadId"])
            if upload_ is None or (upload_["bucket"], upload_["name"]) != (bucket, name):
                return self.error(404, "NoSuchUpload", query["uploadId"])
            parts = upload_["parts"]
            try:  # the parts listed in <CompleteMultipartUpload>, in order
                listed = [
                    (int(p.findtext("{*}PartNumber")), (p.findtext("{*}ETag") or "").strip())
                    for p in ET.fromstring(data).iter() if p.tag.rsplit("}", 1)[-1] == "Part"
                ]
            except ET.ParseError:
                return self.error(400, "MalformedXML", "CompleteMultipartUpload")
            for number, tag in listed:
                if number not in parts or not same_tag(tag, hashlib.md5(parts[number]).hexdigest()):
                    return self.error(400, "InvalidPart", f"part {number}")
            joined = b"".join(parts[n] for n, _ in listed)
            result = (
                f"<CompleteMultipartUploadResult><Bucket>{escape(bucket)}</Bucket>"
                f"<Key>{escape(name)}</Key><ETag>{{etag}}</ETag></CompleteMultipartUploadResult>"
            )
            self.write(bucket, name, joined, upload_["type"], result=result)
            UPLOADS.pop(query["uploadId"], None)
            return
        self.error(400, "InvalidRequest", f"unsupported POST {self.path}")

    def delete(self, bucket, name, query):
        self.body()
        if "uploadId" in query:  # abort a multipart upload (again is fine)
            UPLOADS.pop(query["uploadId"], None)
            return self.reply(204)
        if name is None:
            return self.error(400, "InvalidRequest", "deleting buckets is not supported here")
        with EMULATOR_LOCK:
            status, _, _ = call("DELETE", object_path(bucket, name))
        if status == 404:
            return self.missing(bucket, name)
        if status >= 300:
            raise RuntimeError(f"emulator delete answered {status}")
        self.reply(204)


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # many parallel range reads must not overflow the backlog
    daemon_threads = True


def main():
    global EMULATOR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--emulator", required=True, help="http://127.0.0.1:PORT of the emulator")
    args = parser.parse_args()
    EMULATOR = args.emulator.rstrip("/")
    host, _, port = args.listen.rpartition(":")
    if host != "127.0.0.1":
        parser.error("--listen must be on 127.0.0.1")
    server = Server((host, int(port)), Front)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
