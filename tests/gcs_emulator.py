"""A local Google Cloud Storage emulator (gcp-storage-emulator, PyPI) for tests.

`gcs_emulator` (module fixture) starts `python -m gcp_storage_emulator start` on a free
loopback port with an in-memory store and one bucket, points every client library that can be
pointed at an emulator to it, and stops it at the end:

  STORAGE_EMULATOR_HOST            gcsfs / google-cloud-storage (the standard variable)
  TENSORSTORE_GCS_HTTP_URL         tensorstore's gcs driver (orbax and T5X array data)
  GOOGLE_AUTH_TOKEN_FOR_TESTING    tensorstore: a fixed token instead of Google credentials
  EPATH_USE_TF=false               etils.epath: gcsfs instead of TensorFlow's gfile
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false  gcsfs: no storage-control lookup (needs real auth)

TensorFlow's GCS file system (tf.io.gfile, which etils.epath prefers when TensorFlow is
installed) cannot be pointed at an emulator: its endpoints are compiled in
(https://www.googleapis.com/storage/v1/ and .../upload/storage/v1/, no emulator variable in
tensorflow/libtensorflow_framework.so), so that backend is not exercised here.

One gap of the emulator is filled when it is started (`python tests/gcs_emulator.py PORT`,
see `serve`): real GCS sends the object's generation as the x-goog-generation header of every
read (https://cloud.google.com/storage/docs/xml-api/reference-headers#xgooggeneration); the
emulator does not, and tensorstore then cannot make the conditional writes orbax's OCDBT
manifest needs ("Malformed StorageGeneration").
"""
import os
import socket
import subprocess
import sys
import time

import pytest

BUCKET = "medmt5-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clear_fsspec_caches():
    import gcsfs
    from etils.epath import gpath

    gcsfs.GCSFileSystem.clear_instance_cache()
    # etils caches its "use TensorFlow's gfile?" answer (EPATH_USE_TF) on first use; an earlier
    # test in the same process may have cached True, which would send gs:// to TF's client,
    # and that cannot reach an emulator. (A private etils function: tests only.)
    gpath._is_tf_installed.cache_clear()


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory):
    """Yields the bucket URL, "gs://medmt5-test"; one emulator per test module, env restored
    after."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("gcs") / "emulator.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.close()
                raise RuntimeError(
                    f"GCS emulator did not start: {open(log_path).read()[-2000:]}") from None
            time.sleep(0.2)
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "EPATH_USE_TF": "false",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "GOOGLE_CLOUD_PROJECT": "test"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _clear_fsspec_caches()
    try:
        yield f"gs://{BUCKET}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_fsspec_caches()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def serve(port: int) -> None:
    """Run the emulator in the foreground: in memory, one bucket, reads that carry
    x-goog-generation / x-goog-metageneration as real GCS's do."""
    import logging
    import signal

    from gcp_storage_emulator.handlers import objects

    download = objects.download

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001 - not found: the handler has answered 404 already
            return
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj["metageneration"])

    objects.download = download_with_generation  # before server.py binds its route table
    from gcp_storage_emulator.server import create_server

    logging.basicConfig(level=logging.WARNING)
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    server.run()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
