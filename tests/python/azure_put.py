"""Put files into an Azurite blob container with Microsoft's own client
(azure-storage-blob from PyPI), for tests/object_stores.rs:

    python azure_put.py BLOB_ENDPOINT CONTAINER LOCAL_FILE BLOB_NAME [LOCAL_FILE BLOB_NAME ...]

BLOB_ENDPOINT is Azurite's, e.g. http://127.0.0.1:10000/devstoreaccount1; the account
and its key are Azurite's published development ones.
"""
import sys

from azure.storage.blob import BlobServiceClient

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main(endpoint, container, pairs):
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={KEY};BlobEndpoint={endpoint};"
    )
    service = BlobServiceClient.from_connection_string(conn)
    client = service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for local, name in zip(pairs[::2], pairs[1::2]):
        with open(local, "rb") as f:
            client.upload_blob(name, f, overwrite=True)
    print(f"ok: {len(pairs) // 2} blobs in {container}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
