"""Signing reproduces the published vectors of domain-china.md §8 byte-exactly."""

from __future__ import annotations

from service.channels.signing import (
    aliyun_canonical_query,
    aliyun_rpc_signature,
    aliyun_rpc_string_to_sign,
    aliyun_v3_authorization,
    aliyun_v3_canonical_request,
    aliyun_v3_signature,
    aliyun_v3_string_to_sign,
    percent_encode,
    sha256_hex,
    tc3_authorization,
    tc3_canonical_request,
    tc3_date,
    tc3_derived_keys,
    tc3_signature,
    tc3_string_to_sign,
)

# §8.1 DescribeDedicatedHosts (official, GET)
V81 = {
    "AccessKeyId": "testid",
    "Action": "DescribeDedicatedHosts",
    "Format": "JSON",
    "RegionId": "cn-beijing",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "edb2b34af0af9a6d14deaf7c1a5315eb",
    "SignatureVersion": "1.0",
    "Timestamp": "2023-03-13T08:34:30Z",
    "Version": "2014-05-26",
}
V81_QUERY = (
    "AccessKeyId=testid&Action=DescribeDedicatedHosts&Format=JSON&RegionId=cn-beijing"
    "&SignatureMethod=HMAC-SHA1&SignatureNonce=edb2b34af0af9a6d14deaf7c1a5315eb"
    "&SignatureVersion=1.0&Timestamp=2023-03-13T08%3A34%3A30Z&Version=2014-05-26"
)
V81_STS = (
    "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeDedicatedHosts%26Format%3DJSON"
    "%26RegionId%3Dcn-beijing%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D"
    "edb2b34af0af9a6d14deaf7c1a5315eb%26SignatureVersion%3D1.0%26Timestamp%3D"
    "2023-03-13T08%253A34%253A30Z%26Version%3D2014-05-26"
)

# §8.2 SendSms demo (Chinese SignName, JSON TemplateParam)
V82 = {
    "AccessKeyId": "testId",
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}
V82_QUERY = (
    "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001"
    "&RegionId=cn-hangzhou&SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6"
    "%B5%8B%E8%AF%95%E4%B8%93%E7%94%A8&SignatureMethod=HMAC-SHA1&SignatureNonce="
    "45e25e9b-0a6f-4070-8c85-2956eda1b466&SignatureVersion=1.0&TemplateCode="
    "SMS_71390007&TemplateParam=%7B%22customer%22%3A%22test%22%7D&Timestamp="
    "2017-07-12T02%3A42%3A19Z&Version=2017-05-25"
)
V82_STS = (
    "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123"
    "%26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D%25E9%2598"
    "%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1%25E6%25B5%258B"
    "%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1"
    "%26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0"
    "%26TemplateCode%3DSMS_71390007%26TemplateParam%3D%257B%2522customer%2522%253A"
    "%2522test%2522%257D%26Timestamp%3D2017-07-12T02%253A42%253A19Z"
    "%26Version%3D2017-05-25"
)

# §8.3 ACS3 RunInstances
V83_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": sha256_hex(b""),
}
V83_QUERY = {
    "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
    "RegionId": "cn-shanghai",
}
V83_SIGNED = "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
V83_CANONICAL = (
    "POST\n/\n"
    "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n"
    "host:ecs.cn-shanghai.aliyuncs.com\n"
    "x-acs-action:RunInstances\n"
    "x-acs-content-sha256:"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    "x-acs-date:2023-10-26T10:22:32Z\n"
    "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n"
    "x-acs-version:2014-05-26\n"
    "\n" + V83_SIGNED + "\n"
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)
V83_SIGNATURE = "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"

# §8.4 / §8.5 TC3 DescribeInstances
TC3_PAYLOAD = (
    rb'{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], '
    rb'"Name": "instance-name"}]}'
)
TC3_TS = 1551113065
TC3_CT = "application/json; charset=utf-8"
V84_ID, V84_KEY = "AKID" + "*" * 32, "*" * 32
V85_ID, V85_KEY = (
    "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
    "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
)
V84_HEADERS = {
    "Content-Type": TC3_CT,
    "Host": "cvm.tencentcloudapi.com",
    "X-TC-Action": "DescribeInstances",
}
V85_HEADERS = {"Content-Type": TC3_CT, "Host": "cvm.tencentcloudapi.com"}
V84_CANONICAL = (
    "POST\n/\n\n"
    "content-type:application/json; charset=utf-8\n"
    "host:cvm.tencentcloudapi.com\n"
    "x-tc-action:describeinstances\n"
    "\n"
    "content-type;host;x-tc-action\n"
    "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
)
V84_STS = (
    "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
    "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
)
V85_CANONICAL = (
    "POST\n/\n\n"
    "content-type:application/json; charset=utf-8\n"
    "host:cvm.tencentcloudapi.com\n"
    "\n"
    "content-type;host\n"
    "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
)
V85_STS = (
    "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
    "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
)


def test_percent_encode_follows_the_aliyun_rfc3986_rules() -> None:
    """Space becomes %20, ``*`` becomes %2A, ``~`` and ``-_.`` stay as they are."""
    assert percent_encode("a b*c~d-_.") == "a%20b%2Ac~d-_."


def test_aliyun_8_1_canonical_query() -> None:
    """§8.1: the canonicalised query string matches the official example."""
    assert aliyun_canonical_query(V81) == V81_QUERY


def test_aliyun_8_1_string_to_sign() -> None:
    """§8.1: the GET string to sign matches the official example."""
    assert aliyun_rpc_string_to_sign("GET", V81) == V81_STS


def test_aliyun_8_1_signature() -> None:
    """§8.1: the HMAC-SHA1 signature is the official one."""
    assert aliyun_rpc_signature("testsecret", "GET", V81) == "9NaGiOspFP5UPcwX8Iwt2YJXXuk="


def test_aliyun_8_1_signature_url_encoded() -> None:
    """§8.1: the signature percent-encodes to the value printed in the doc's URL."""
    signature = aliyun_rpc_signature("testsecret", "GET", V81)
    assert percent_encode(signature) == "9NaGiOspFP5UPcwX8Iwt2YJXXuk%3D"


def test_aliyun_signature_parameter_is_never_signed() -> None:
    """A ``Signature`` entry in the parameters does not change the signature."""
    with_signature = {**V81, "Signature": "ignored"}
    assert aliyun_rpc_signature("testsecret", "GET", with_signature) == (
        "9NaGiOspFP5UPcwX8Iwt2YJXXuk="
    )


def test_aliyun_8_2_canonical_query_encodes_chinese_and_json() -> None:
    """§8.2: UTF-8 SignName and JSON TemplateParam encode byte-exactly."""
    assert aliyun_canonical_query(V82) == V82_QUERY


def test_aliyun_8_2_string_to_sign() -> None:
    """§8.2: the GET string to sign is the pinned one."""
    assert aliyun_rpc_string_to_sign("GET", V82) == V82_STS


def test_aliyun_8_2_get_signature() -> None:
    """§8.2: the GET signature is the widely pinned demo value."""
    assert aliyun_rpc_signature("testSecret", "GET", V82) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_aliyun_8_2_post_signature() -> None:
    """§8.2: the same parameters signed for POST give the self-computed value."""
    assert aliyun_rpc_signature("testSecret", "POST", V82) == "Xvhv7fPXrPkLVSnlt0jIr08o8NQ="


def test_aliyun_v3_8_3_canonical_request() -> None:
    """§8.3: the ACS3 canonical request and signed headers match the doc."""
    canonical, signed = aliyun_v3_canonical_request("POST", V83_QUERY, V83_HEADERS, sha256_hex(b""))
    assert (canonical, signed) == (V83_CANONICAL, V83_SIGNED)


def test_aliyun_v3_8_3_string_to_sign() -> None:
    """§8.3: the ACS3 string to sign matches the doc."""
    assert aliyun_v3_string_to_sign(V83_CANONICAL) == (
        "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )


def test_aliyun_v3_8_3_signature() -> None:
    """§8.3: the ACS3 signature (raw secret, no ``&``) is the official one."""
    sts = aliyun_v3_string_to_sign(V83_CANONICAL)
    assert aliyun_v3_signature("YourAccessKeySecret", sts) == V83_SIGNATURE


def test_aliyun_v3_8_3_authorization() -> None:
    """§8.3: the Authorization header is comma separated without spaces."""
    assert aliyun_v3_authorization("YourAccessKeyId", V83_SIGNED, V83_SIGNATURE) == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders="
        + V83_SIGNED
        + ",Signature="
        + V83_SIGNATURE
    )


def test_tc3_date_is_the_utc_date() -> None:
    """1551113065 is 2019-02-26 in Beijing but the scope date is the UTC 2019-02-25."""
    assert tc3_date(TC3_TS) == "2019-02-25"


def test_tc3_8_4_payload_hash() -> None:
    """§8.4: the hashed payload matches the doc."""
    assert sha256_hex(TC3_PAYLOAD) == (
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )


def test_tc3_8_4_canonical_request() -> None:
    """§8.4: headers, x-tc-action's value lower-cased, canonicalise as documented."""
    canonical, signed = tc3_canonical_request("POST", V84_HEADERS, TC3_PAYLOAD)
    assert (canonical, signed) == (V84_CANONICAL, "content-type;host;x-tc-action")


def test_tc3_8_4_string_to_sign() -> None:
    """§8.4: the string to sign matches the doc."""
    assert tc3_string_to_sign(TC3_TS, "cvm", V84_CANONICAL) == V84_STS


def test_tc3_8_4_derived_keys() -> None:
    """§8.4: SecretDate, SecretService and SecretSigning match the doc."""
    keys = tc3_derived_keys(V84_KEY, "2019-02-25", "cvm")
    assert tuple(k.hex() for k in keys) == (
        "da98fb70dcf6b112dc21038d1eeeb3a95c74b4dcb12c1131f864f6066bd02be0",
        "8d70cbefb03939f929db64d32dc2ba89b1095620119fe3e050e2b18c5bd2752f",
        "b596b923aad85185e2d1f6659d2a062e0a86731226e021e61bfe06f7ed05f5af",
    )


def test_tc3_8_4_signature() -> None:
    """§8.4: the signature is the official one."""
    assert tc3_signature(V84_KEY, "2019-02-25", "cvm", V84_STS) == (
        "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
    )


def test_tc3_8_4_authorization() -> None:
    """§8.4: the Authorization header is comma-and-space separated, as documented."""
    signature = tc3_signature(V84_KEY, "2019-02-25", "cvm", V84_STS)
    header = tc3_authorization(
        V84_ID, "2019-02-25", "cvm", "content-type;host;x-tc-action", signature
    )
    assert header == (
        "TC3-HMAC-SHA256 Credential=AKID********************************/2019-02-25/cvm"
        "/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature="
        "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
    )


def test_tc3_8_5_canonical_request() -> None:
    """§8.5: two signed headers canonicalise as in the older doc revision."""
    canonical, signed = tc3_canonical_request("POST", V85_HEADERS, TC3_PAYLOAD)
    assert (canonical, signed) == (V85_CANONICAL, "content-type;host")


def test_tc3_8_5_string_to_sign() -> None:
    """§8.5: the string to sign matches the older doc revision."""
    assert tc3_string_to_sign(TC3_TS, "cvm", V85_CANONICAL) == V85_STS


def test_tc3_8_5_signature() -> None:
    """§8.5: the signature with the real example key is the official one."""
    assert tc3_signature(V85_KEY, "2019-02-25", "cvm", V85_STS) == (
        "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


def test_tc3_cross_check_8_4_request_with_8_5_key() -> None:
    """§8.4's canonical request signed with §8.5's key gives the self-computed value."""
    assert tc3_signature(V85_KEY, "2019-02-25", "cvm", V84_STS) == (
        "644be983de9a8a3f00db8eadaba61467c3b429e2215758ba897b738ca469fd26"
    )
