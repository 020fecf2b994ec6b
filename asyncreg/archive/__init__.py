"""Reading image archives: OCI layout tars and ``docker save`` tars, without extracting them.

An import is a copy whose source is a tar, so the archive is exposed as a
read-only `Repo` (`reader.TarRepo`) and the ordinary copy engine does the
rest. Nothing is ever written out of the archive to disk: `tarindex` makes
one pass over the headers and remembers where each member's bytes start, and
every read is a bounded range of the original file. That makes the usual tar
extraction attacks (absolute paths, ``..``, links out of the archive, device
nodes) harmless, and they are refused anyway, with the entry named, because
a tar that carries them was not made by an image tool.

Modules:

- `tarindex`: the header index, link resolution, hostile-entry checks, gzip
  tars, ranged async reads;
- `reader`: `TarRepo`, the `Repo` over an indexed tar (OCI layout tars of
  skopeo, crane, asyncreg and Docker 25+, and legacy ``docker save`` tars);
- `dockersave`: turns a legacy ``docker save`` / skopeo ``docker-archive:``
  ``manifest.json`` into Docker schema2 manifests, compressing layers lazily
  in worker threads.
"""
