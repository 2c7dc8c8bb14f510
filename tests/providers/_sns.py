"""The SNS HTTP notification envelope of Amazon's documentation, around any message."""

from __future__ import annotations

import json
from typing import Any

# The example Notification of "HTTP/HTTPS notification JSON format" (Amazon SNS developer guide).
ENVELOPE: dict[str, Any] = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
    "Subject": "My First Message",
    "Timestamp": "2012-05-02T00:54:06.655Z",
    "SignatureVersion": "1",
    "Signature": "EXAMPLEw6JRN...",
    "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
    "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96",
}


def notification(message: dict[str, Any], **envelope: Any) -> bytes:
    """The raw body SNS posts for *message* (JSON inside the envelope's Message string)."""
    return json.dumps({**ENVELOPE, "Message": json.dumps(message), **envelope}).encode()
