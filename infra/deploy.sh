#!/usr/bin/env bash
# Build the Lambda image, push it to ECR and deploy infra/template.yaml for one stage.
#
#   infra/deploy.sh [--dry-run] [--stage dev] [--region us-east-1] [--account ID]
#                   [--project spherex] [--tag TAG] [--arch x86_64|arm64]
#                   [--alarm-email ADDR] [--bucket ARTIFACT_BUCKET]
#
# --dry-run prints every command an operator would run and runs none of them (no AWS or
# Docker calls, nothing uploaded). Options default to the environment: STAGE, AWS_REGION,
# AWS_ACCOUNT_ID, PROJECT, IMAGE_TAG, ARCH, ALARM_EMAIL, DEPLOY_BUCKET (SKIP_LINT=1 skips
# cfn-lint, e.g. in tests that lint separately).
# Needs (for real): aws CLI v2 with credentials, docker with buildx, python3.
set -euo pipefail

cd "$(dirname "$0")/.."
DRY=0
STAGE=${STAGE:-dev}
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
ACCOUNT=${AWS_ACCOUNT_ID:-}
PROJECT=${PROJECT:-spherex}
TAG=${IMAGE_TAG:-}
ARCH=${ARCH:-x86_64}
ALARM_EMAIL=${ALARM_EMAIL:-}
BUCKET=${DEPLOY_BUCKET:-}

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --stage) STAGE=$2; shift ;;
    --region) REGION=$2; shift ;;
    --account) ACCOUNT=$2; shift ;;
    --project) PROJECT=$2; shift ;;
    --tag) TAG=$2; shift ;;
    --arch) ARCH=$2; shift ;;
    --alarm-email) ALARM_EMAIL=$2; shift ;;
    --bucket) BUCKET=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
  esac
  shift
done

case "$ARCH" in
  x86_64) PLATFORM=linux/amd64 ;;
  arm64) PLATFORM=linux/arm64 ;;
  *) echo "--arch must be x86_64 or arm64" >&2; exit 2 ;;
esac

# Print a command; run it unless this is a dry run.
run() {
  printf '+ %s\n' "$1"
  if [ "$DRY" = 0 ]; then eval "$1"; fi
}

if [ -z "$ACCOUNT" ]; then
  if [ "$DRY" = 1 ]; then
    ACCOUNT="<account-id>"
  else
    ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
  fi
fi
if [ -z "$TAG" ]; then
  # One tag per commit (plus -dirty for local changes): a new tag is what makes
  # CloudFormation point the functions at the new image.
  TAG=$(git rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)
  git diff --quiet HEAD 2>/dev/null || TAG="$TAG-dirty-$(date -u +%Y%m%d%H%M%S)"
fi

STACK="$PROJECT-$STAGE"
REPO="$PROJECT-archive"
REGISTRY="$ACCOUNT.dkr.ecr.$REGION.amazonaws.com"
IMAGE="$REGISTRY/$REPO:$TAG"
TEMPLATE=infra/template.yaml

echo "# stack $STACK in $REGION, image $IMAGE ($ARCH)"

# Local checks first: the template carries the current state machine files and lints clean.
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" infra/sync_asl.py --check
if [ "${SKIP_LINT:-0}" != 1 ] && [ -x .venv/bin/cfn-lint ]; then .venv/bin/cfn-lint "$TEMPLATE"; fi

echo "# 1. container registry (once per account and region)"
run "aws ecr describe-repositories --region $REGION --repository-names $REPO >/dev/null 2>&1 || aws ecr create-repository --region $REGION --repository-name $REPO --image-scanning-configuration scanOnPush=true >/dev/null"
run "aws ecr get-login-password --region $REGION | docker login --username AWS --password-stdin $REGISTRY"

echo "# 2. build and push the image (all functions run it)"
run "docker buildx build --platform $PLATFORM --provenance=false -f infra/Dockerfile -t $IMAGE --load ."
run "docker push $IMAGE"

echo "# 3. deploy the stack"
PARAMS="Project=$PROJECT Stage=$STAGE ImageUri=$IMAGE Architecture=$ARCH"
[ -n "$ALARM_EMAIL" ] && PARAMS="$PARAMS AlarmEmail=$ALARM_EMAIL"
UPLOAD=""
# A template body over 51,200 bytes must go through S3.
if [ "$(wc -c < "$TEMPLATE")" -gt 51200 ]; then
  if [ -z "$BUCKET" ]; then  # a private bucket for templates, made once per stage
    BUCKET="$PROJECT-$STAGE-templates-$ACCOUNT-$REGION"
    run "aws s3api head-bucket --bucket $BUCKET 2>/dev/null || aws s3 mb s3://$BUCKET --region $REGION"
  fi
  UPLOAD=" --s3-bucket $BUCKET --s3-prefix $STACK"
fi
run "aws cloudformation deploy --region $REGION --stack-name $STACK --template-file $TEMPLATE --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset$UPLOAD --parameter-overrides $PARAMS"
run "aws cloudformation describe-stacks --region $REGION --stack-name $STACK --query 'Stacks[0].Outputs' --output table"

if [ "$DRY" = 1 ]; then
  echo "# dry run: nothing was built, pushed or deployed"
fi
