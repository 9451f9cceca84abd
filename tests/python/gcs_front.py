"""An XML-API front for gcp-storage-emulator, for tests/object_stores.rs.

`gcp-storage-emulator` (PyPI) implements Google Cloud Storage's JSON API; the Rust
`object_store` crate's GCS client speaks the XML API (HEAD, `list-type=2` listings,
ETag and Last-Modified headers, `x-goog-if-generation-match: 0` for create-only puts,
multipart uploads). This server speaks that subset of the XML API on 127.0.0.1 and
does each request through the emulator's JSON API, so the emulator holds every byte:

    python gcs_front.py --listen 127.0.0.1:PORT --emulator http://127.0.0.1:EMULATOR_PORT

It prints `ready` once listening. Standard library only.
"""
import argparse
import email.utils
import hashlib
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

EMULATOR = ""
# Create-only puts check and write under one lock (the emulator has no preconditions).
WRITES = threading.Lock()
UPLOADS = {}  # upload id -> {part number: bytes}


def quote(name):
    return urllib.parse.quote(name, safe="")


def emulator(method, path, body=None, headers=None):
    """(status, bytes) of a JSON API request to the emulator."""
    req = urllib.request.Request(EMULATOR + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metadata(bucket, name):
    status, body = emulator("GET", f"/storage/v1/b/{bucket}/o/{quote(name)}")
    return json.loads(body) if status == 200 else None


def bucket_exists(bucket):
    return emulator("GET", f"/storage/v1/b/{bucket}")[0] == 200


def etag(meta):
    return '"{}"'.format(meta.get("md5Hash") or meta.get("generation"))


def updated(meta):
    return datetime.fromisoformat(meta["updated"].replace("Z", "+00:00"))


def upload(bucket, name, data):
    status, body = emulator(
        "POST",
        f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name)}",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    return status, json.loads(body) if status == 200 else None


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # -- plumbing ---------------------------------------------------------------
    def target(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0])
        name = urllib.parse.unquote(parts[1]) if len(parts) > 1 and parts[1] else None
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        return bucket, name, {k: v[0] for k, v in query.items()}

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, data=b"", headers=None, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and not head:
            self.wfile.write(data)

    def error(self, status, code, message):
        xml = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        self.reply(status, xml.encode(), {"Content-Type": "application/xml"}, head=self.command == "HEAD")

    def object_headers(self, meta):
        return {
            "ETag": etag(meta),
            "Last-Modified": email.utils.format_datetime(updated(meta), usegmt=True),
            "x-goog-generation": str(meta.get("generation", "1")),
            "Content-Type": meta.get("contentType", "application/octet-stream"),
        }

    # -- verbs ------------------------------------------------------------------
    def do_HEAD(self):
        self.read_object(head=True)

    def do_GET(self):
        bucket, name, query = self.target()
        if name is None:
            return self.list(bucket, query)
        self.read_object(head=False)

    def read_object(self, head):
        bucket, name, _ = self.target()
        meta = metadata(bucket, name) if name else None
        if meta is None:
            code = "NoSuchKey" if bucket_exists(bucket) else "NoSuchBucket"
            return self.error(404, code, f"{bucket}/{name}")
        headers = self.object_headers(meta)
        match = self.headers.get("If-Match")
        if match and match not in (headers["ETag"], "*"):
            return self.error(412, "PreconditionFailed", "If-Match")
        if self.headers.get("If-None-Match") in (headers["ETag"], "*"):
            return self.reply(304, headers=headers)
        size = int(meta["size"])
        if head:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            return
        status, data = emulator("GET", f"/storage/v1/b/{bucket}/o/{quote(name)}?alt=media")
        if status != 200:
            return self.error(status, "InternalError", data.decode(errors="replace"))
        wanted = self.headers.get("Range")
        if not wanted:
            return self.reply(200, data, headers)
        start, _, end = wanted.removeprefix("bytes=").partition("-")
        if start == "":
            start, end = max(size - int(end), 0), size - 1
        else:
            start, end = int(start), min(int(end) if end else size - 1, size - 1)
        if start >= size or start > end:
            return self.error(416, "InvalidRange", wanted)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.reply(206, data[start : end + 1], headers)

    def list(self, bucket, query):
        params = {"prefix": query.get("prefix", "")}
        if query.get("delimiter"):
            params["delimiter"] = query["delimiter"]
        status, body = emulator("GET", f"/storage/v1/b/{bucket}/o?" + urllib.parse.urlencode(params))
        if status == 404:
            return self.error(404, "NoSuchBucket", bucket)
        listing = json.loads(body)
        entries = [(o["name"], o) for o in listing.get("items") or []]
        entries += [(p, None) for p in listing.get("prefixes") or []]
        entries.sort(key=lambda e: e[0])
        after = query.get("continuation-token") or query.get("start-after")
        if after:
            entries = [e for e in entries if e[0] > after]
        limit = int(query.get("max-keys") or 1000)
        page, more = entries[:limit], len(entries) > limit
        xml = ["<?xml version='1.0' encoding='UTF-8'?><ListBucketResult>"]
        for key, o in page:
            if o is None:
                xml.append(f"<CommonPrefixes><Prefix>{escape(key)}</Prefix></CommonPrefixes>")
            else:
                modified = updated(o).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                xml.append(
                    f"<Contents><Key>{escape(key)}</Key><Size>{o['size']}</Size>"
                    f"<LastModified>{modified}</LastModified><ETag>{escape(etag(o))}</ETag></Contents>"
                )
        if more:
            xml.append(f"<NextContinuationToken>{escape(page[-1][0])}</NextContinuationToken>")
        xml.append("</ListBucketResult>")
        self.reply(200, "".join(xml).encode(), {"Content-Type": "application/xml"})

    def do_PUT(self):
        bucket, name, query = self.target()
        data = self.body()
        if name is None:
            status, _ = emulator(
                "POST", "/storage/v1/b?project=test", json.dumps({"name": bucket}).encode(),
                {"Content-Type": "application/json"},
            )
            return self.reply(200 if status in (200, 409) else status)
        if "uploadId" in query:
            part = UPLOADS.get(query["uploadId"])
            if part is None:
                return self.error(404, "NoSuchUpload", query["uploadId"])
            part[int(query["partNumber"])] = data
            return self.reply(200, headers={"ETag": '"{}"'.format(hashlib.md5(data).hexdigest())})
        source = self.headers.get("x-goog-copy-source")
        if source:
            src_bucket, _, src_name = urllib.parse.unquote(source).lstrip("/").partition("/")
            status, data = emulator("GET", f"/storage/v1/b/{src_bucket}/o/{quote(src_name)}?alt=media")
            if status != 200:
                return self.error(404, "NoSuchKey", source)
        self.write(bucket, name, data, self.headers.get("x-goog-if-generation-match") == "0")

    def write(self, bucket, name, data, create_only, xml=None):
        with WRITES:
            if create_only and metadata(bucket, name) is not None:
                return self.error(412, "PreconditionFailed", f"{bucket}/{name} exists")
            status, meta = upload(bucket, name, data)
        if meta is None:
            code = "NoSuchBucket" if status == 404 else "InternalError"
            return self.error(status, code, f"{bucket}/{name}")
        headers = self.object_headers(meta)
        body = b""
        if xml:
            body = xml.format(etag=escape(headers["ETag"])).encode()
            headers["Content-Type"] = "application/xml"
        self.reply(200, body, headers)

    def do_POST(self):
        bucket, name, query = self.target()
        self.body()
        if "uploads" in query:
            upload_id = uuid.uuid4().hex
            UPLOADS[upload_id] = {}
            xml = (
                "<?xml version='1.0' encoding='UTF-8'?><InitiateMultipartUploadResult>"
                f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(name)}</Key>"
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
            )
            return self.reply(200, xml.encode(), {"Content-Type": "application/xml"})
        if "uploadId" in query:
            parts = UPLOADS.pop(query["uploadId"], None)
            if parts is None:
                return self.error(404, "NoSuchUpload", query["uploadId"])
            data = b"".join(parts[n] for n in sorted(parts))
            xml = (
                "<?xml version='1.0' encoding='UTF-8'?><CompleteMultipartUploadResult>"
                f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(name)}</Key>"
                "<ETag>{etag}</ETag></CompleteMultipartUploadResult>"
            )
            return self.write(bucket, name, data, False, xml)
        self.error(400, "InvalidRequest", "unsupported POST")

    def do_DELETE(self):
        bucket, name, query = self.target()
        if "uploadId" in query:
            UPLOADS.pop(query["uploadId"], None)
            return self.reply(204)
        status, _ = emulator("DELETE", f"/storage/v1/b/{bucket}/o/{quote(name)}")
        if status == 404:
            return self.error(404, "NoSuchKey", f"{bucket}/{name}")
        self.reply(204)


def main():
    global EMULATOR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--emulator", required=True, help="http://127.0.0.1:PORT")
    args = parser.parse_args()
    EMULATOR = args.emulator.rstrip("/")
    host, port = args.listen.rsplit(":", 1)
    if host != "127.0.0.1":
        parser.error("--listen must be on 127.0.0.1")
    server = ThreadingHTTPServer((host, int(port)), Front)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
