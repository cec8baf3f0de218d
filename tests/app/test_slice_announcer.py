"""A node's slice announcer over the real database: keyset pages, re-slicing, rescans, metrics."""

from __future__ import annotations

from prism.app.dht import DhtAnnounceOptions
from prism.app.metrics import Metrics
from prism.app.start import SliceAnnouncer
from prism.cluster.slicing import FULL_RANGE, Assignment, slice_of
from prism.config import MysqlParams
from prism.db.mysql import MysqlDatabase
from tests.cluster.nodes import store_hashes
from tests.conftest import sql
from tests.helpers import eventually, running


def scheduled(announcer: SliceAnnouncer) -> set[str]:
    assert announcer.node is not None and announcer.node.announcer is not None
    return {k.hex() for k in announcer.node.announcer.schedule._due}


async def test_slices_are_read_in_pages_and_what_leaves_is_dropped(mysql_database: MysqlParams) -> None:
    hashes = store_hashes(mysql_database, 120)
    sql(mysql_database, "UPDATE blob_ SET is_stored = 0 WHERE hash = %s", (hashes[0],))
    stored = set(hashes[1:])
    db = MysqlDatabase(mysql_database)
    await db.start(require=True)
    opts = DhtAnnounceOptions(port=0, seeds=[], host="127.0.0.1", allow_private_peers=True, announce="all")
    lines: list[str] = []
    announcer = SliceAnnouncer(opts, db, lambda: 3333, rescan=0.3, page=7, report=lines.append)
    try:
        async with running(announcer):
            announcer.assign(Assignment(1, 1, FULL_RANGE, ("a",)))
            await eventually(lambda: announcer.scans >= 1, what="first read")
            assert scheduled(announcer) == stored
            half = slice_of(2, 2)
            before = announcer.scans
            announcer.assign(Assignment(2, 2, half, ("a", "b")))
            mine = {h for h in stored if int(h, 16) in half}
            await eventually(lambda: announcer.scans > before and announcer.range == half, what="second read")
            assert scheduled(announcer) == mine
            assert announcer.hashes == mine and lines[-1].startswith("slice 2 of 2: 8")
            # a blob stored since (by any node) is found by the next read; a deleted one is dropped
            new = {h for h in store_hashes(mysql_database, 40) if int(h, 16) in half}
            gone = sorted(mine)[0]
            sql(mysql_database, "DELETE FROM blob_ WHERE hash = %s", (gone,))
            await eventually(lambda: scheduled(announcer) == (mine | new) - {gone}, what="rescanned")
            text = Metrics()
            text.clusters.append(announcer)
            text.announcers.append(announcer)
            rendered = text.render().decode()
            assert "reflector_cluster_members 2" in rendered and "reflector_cluster_position 2" in rendered
            assert f"reflector_cluster_slice_hashes {len(announcer.hashes)}" in rendered
            assert "reflector_dht_announce_backlog" in rendered  # no contacts: all of it
            # fewer members than --min-members: nothing
            announcer.assign(Assignment(2, 2, None, ("a", "b")))
            await eventually(lambda: not scheduled(announcer), what="nothing scheduled")
            assert lines[-1] == "slice: none: announcing nothing"
    finally:
        await db.close()


async def test_pages_and_sd_head(mysql_database: MysqlParams) -> None:
    db = MysqlDatabase(mysql_database)
    await db.start(require=True)
    try:
        hashes = sorted(store_hashes(mysql_database, 25))
        lo, hi = FULL_RANGE.start_hex, FULL_RANGE.end_hex
        first = await db.stored_hashes_page(lo, hi, 10)
        second = await db.stored_hashes_page(lo, hi, 10, after=first[-1])
        assert first + second == hashes[:20]
        assert await db.stored_hashes_page(hashes[3], hashes[5], 10) == hashes[3:6]
        # sd-head: an sd blob and the first content blob of its stream, not the second
        sd_hash, head, second_blob = hashes[0], hashes[1], hashes[2]
        sql(
            mysql_database,
            "INSERT INTO stream (hash, sd_blob_id) SELECT %s, id FROM blob_ WHERE hash = %s",
            ("ab" * 48, sd_hash),
        )
        for num, h in ((0, head), (1, second_blob)):
            sql(
                mysql_database,
                "INSERT INTO stream_blob (stream_id, blob_id, num) "
                "SELECT s.id, b.id, %s FROM stream s, blob_ b WHERE b.hash = %s",
                (num, h),
            )
        assert await db.stored_hashes_page(lo, hi, 100, sd_head=True) == [sd_hash, head]
    finally:
        await db.close()
