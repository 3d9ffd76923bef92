def test_seaweedfs_serves_s3(s3_server):
    c = s3_server.client()
    c.put_object(Bucket="test", Key="smoke", Body=b"x")
    assert c.get_object(Bucket="test", Key="smoke")["Body"].read() == b"x"
