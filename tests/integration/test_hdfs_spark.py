"""Real HDFS: write over WebHDFS from Python, read back with Spark through hdfs://."""

import uuid

import pytest

from flywheel.hdfs import webhdfs
from flywheel.spark import spark_session

pytestmark = pytest.mark.integration


def test_webhdfs_write_then_spark_reads_hdfs(stack):
    fs = webhdfs(stack)
    folder = f"{stack.hdfs.root}/it/{uuid.uuid4().hex[:8]}"
    fs.makedirs(folder, exist_ok=True)
    with fs.open(f"{folder}/ratings.csv", "wb") as f:
        f.write(b"user,item,rating\n" + b"".join(f"{u},{u * 3},{u % 5 + 1}\n".encode() for u in range(200)))
    assert fs.info(f"{folder}/ratings.csv")["size"] > 0

    spark = spark_session(stack, "it-hdfs")
    try:
        df = spark.read.option("header", True).option("inferSchema", True).csv(f"{stack.hdfs_uri}{folder}")
        assert df.count() == 200
        assert df.agg({"rating": "sum"}).first()[0] == sum(u % 5 + 1 for u in range(200))
        # and back: Spark writes Parquet on HDFS, Python lists it over WebHDFS
        df.write.mode("overwrite").parquet(f"{stack.hdfs_uri}{folder}/parquet")
    finally:
        spark.stop()
    assert any(p.endswith(".parquet") for p in fs.ls(f"{folder}/parquet", detail=False))
