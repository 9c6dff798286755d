"""Creates in moto what deploy/cloudformation/resizeq.yaml creates on AWS: the source and
destination buckets, the queue with its dead-letter queue and redrive policy, and the source
bucket's ObjectCreated and ObjectRemoved notifications to the queue, and the queue of the
events for the app. Idempotent; run by deploy/compose.yaml."""

import json
import os

import boto3

ENDPOINT = os.environ.get("ENDPOINT_URL", "http://moto:5000")
SOURCE, DESTINATION = "photos", "photos-resized"
QUEUE, DLQ = "resizeq-uploads", "resizeq-uploads-dlq"
# The worker's events.target: the queue an app would long-poll for "variants ready" events.
APP_EVENTS = "resizeq-app-events"

s3 = boto3.client("s3", endpoint_url=ENDPOINT)
sqs = boto3.client("sqs", endpoint_url=ENDPOINT)

dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
sqs.create_queue(QueueName=APP_EVENTS)
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
queue_url = sqs.create_queue(
    QueueName=QUEUE,
    Attributes={
        "VisibilityTimeout": "60",
        "ReceiveMessageWaitTimeSeconds": "20",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
    },
)["QueueUrl"]
queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

for bucket in (SOURCE, DESTINATION):
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass

s3.put_bucket_notification_configuration(
    Bucket=SOURCE,
    NotificationConfiguration={
        "QueueConfigurations": [{
            "QueueArn": queue_arn,
            "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*", "s3:LifecycleExpiration:*"],
        }]
    },
)
print(f"ready: s3://{SOURCE} -> {queue_url} (DLQ {dlq_url}); variants in s3://{DESTINATION}")
