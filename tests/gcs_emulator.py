"""A local Google Cloud Storage for the tests: ``python tests/gcs_emulator.py PORT`` serves an in-memory GCS
(bucket ``gid``) on localhost.

It is gcp-storage-emulator (PyPI) with one thing real GCS does that it lacks: media downloads carry the
object's ``x-goog-generation`` / ``x-goog-metageneration`` headers. tensorstore (orbax's array storage)
reads the generation from that header for its conditional writes (the OCDBT manifest of a checkpoint is
read, changed and written back only if unchanged); without it every second write of a manifest fails with
"Malformed StorageGeneration".
"""

import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
  except Exception:  # pylint: disable=broad-except
    return  # not found: the handler has set the status
  response['x-goog-generation'] = str(obj['generation'])
  response['x-goog-metageneration'] = str(obj['metageneration'])


objects.download = _download_with_generation  # before the server module builds its routes from it

from gcp_storage_emulator import server  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

BUCKET = 'gid'


def main() -> None:
  server.create_server('localhost', int(sys.argv[1]), in_memory=True, default_bucket=BUCKET).run()


if __name__ == '__main__':
  main()
