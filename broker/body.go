package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetrelay/jetrelay/contracts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Bodies above the inline limit live in the body bucket, laid out as a
// JetStream Object Store (so the nats CLI lists and describes them; it
// does not read them back, as their info carries no digest), but written
// and read here with one chunk in flight at a time: nats.go's Put keeps
// every chunk of every upload in flight, and its Get pushes chunks through
// an ordered consumer that times out when the reader is slow (an SMTP
// destination that takes its time). Memory per upload or download is one
// chunk, whatever the message size.

// chunkSize is the largest chunk that fits max_payload with its headers.
func (c *Client) chunkSize() int {
	n := int(c.nc.MaxPayload()) - 4096
	if n > 1<<20 {
		n = 1 << 20
	}
	if n < 64<<10 {
		n = 64 << 10
	}
	return n
}

func chunkSubject(nuid string) string { return "$O." + contracts.BucketBodies + ".C." + nuid }

func metaSubject(name string) string {
	return "$O." + contracts.BucketBodies + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

const bodyStream = "OBJ_" + contracts.BucketBodies

// chunkPool recycles upload buffers: a large message costs one chunk of
// memory while it is stored, not a fresh megabyte per upload.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0); return &b }}

// PutBody streams a body into the body bucket under name and returns its
// size. A failed put leaves nothing behind. The body is held by nothing
// yet: Enqueue of the job that names it makes the job its first holder.
//
// No digest is computed: the server checksums every record it stores, and
// a reader checks the size and the chunk count, which catches a body cut
// short. (The SHA-256 over every body, on both sides, was a quarter of
// the CPU a large body cost; BENCHMARKS.md.) The object's info therefore
// has no digest, and the nats CLI's `object get` refuses to check it.
func (c *Client) PutBody(ctx context.Context, name string, r io.Reader) (int64, error) {
	id := nuid.Next()
	subj := chunkSubject(id)
	size := c.chunkSize()
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	if cap(*bp) < size {
		*bp = make([]byte, size)
	}
	buf := (*bp)[:size]
	var total int64
	var chunks uint32
	purge := func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.set.PublishTimeout)
		defer cancel()
		if st, err := c.js.Stream(pctx, bodyStream); err == nil {
			_ = st.Purge(pctx, jetstream.WithPurgeSubject(subj))
		}
	}
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			pctx, cancel := c.withTimeout(ctx)
			_, err := c.js.Publish(pctx, subj, buf[:n], jetstream.WithExpectStream(bodyStream))
			cancel()
			if err != nil {
				purge()
				return 0, fmt.Errorf("%w: store body %s: %w", ErrUnavailable, name, c.classifyWrite(err))
			}
			total += int64(n)
			chunks++
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			purge()
			return 0, rerr
		}
	}
	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(size)}},
		Bucket:     contracts.BucketBodies,
		NUID:       id,
		Size:       uint64(total),
		ModTime:    time.Now().UTC(),
		Chunks:     chunks,
	}
	data, _ := json.Marshal(info)
	m := nats.NewMsg(metaSubject(name))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Data = data
	pctx, cancel := c.withTimeout(ctx)
	defer cancel()
	if _, err := c.js.PublishMsg(pctx, m, jetstream.WithExpectStream(bodyStream)); err != nil {
		purge()
		return 0, fmt.Errorf("%w: store body %s: %w", ErrUnavailable, name, c.classifyWrite(err))
	}
	c.storage.wroteOK()
	return total, nil
}

// ErrBodyNotFound means a job's body object is gone.
var ErrBodyNotFound = errors.New("body object not found")

// OpenJobBody opens a job's message: inline is the body when it travels in
// the job (as ScanQueue, ScanDeadLetters and a Lease give it).
func (c *Client) OpenJobBody(ctx context.Context, j *contracts.Job, inline []byte) (io.ReadCloser, error) {
	if j.Body.Inline() {
		return io.NopCloser(bytes.NewReader(inline)), nil
	}
	return c.OpenBody(ctx, j.Body.Object)
}

// OpenBody streams a body from the bucket. Chunks are fetched one at a
// time as the reader asks for them; the final Read fails with
// ErrBodyCorrupt when the size or the number of chunks does not match
// the object's info (a digest, which bodies stored by earlier builds
// carry, is not checked again: the server checksums its records).
func (c *Client) OpenBody(ctx context.Context, name string) (io.ReadCloser, error) {
	ictx, cancel := c.withTimeout(ctx)
	defer cancel()
	info, err := c.bodies.GetInfo(ictx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrBodyNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open body %s: %v", ErrUnavailable, name, err)
	}
	return &bodyReader{c: c, ctx: ctx, name: name, subj: chunkSubject(info.NUID), size: int64(info.Size),
		chunks: info.Chunks, next: 1}, nil
}

// ErrBodyCorrupt means a stored body does not match its size or chunk count.
var ErrBodyCorrupt = errors.New("body object corrupt")

type bodyReader struct {
	c      *Client
	ctx    context.Context
	name   string
	subj   string
	size   int64
	chunks uint32

	next  uint64 // stream sequence to look from
	got   uint32 // chunks read
	read  int64  // bytes read
	cur   []byte
	err   error
	inbox string
	sub   *nats.Subscription
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.cur) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if b.got == b.chunks {
			b.err = io.EOF
			if b.read != b.size {
				b.err = fmt.Errorf("%w: %s", ErrBodyCorrupt, b.name)
			}
			continue
		}
		if err := b.fetch(); err != nil {
			b.err = err
		}
	}
	n := copy(p, b.cur)
	b.cur = b.cur[n:]
	return n, nil
}

// fetch reads the next chunk with a direct get.
func (b *bodyReader) fetch() error {
	if b.sub == nil {
		b.inbox = b.c.nc.NewInbox()
		sub, err := b.c.nc.SubscribeSync(b.inbox)
		if err != nil {
			return fmt.Errorf("%w: read body %s: %v", ErrUnavailable, b.name, err)
		}
		b.sub = sub
	}
	req, _ := json.Marshal(map[string]any{"seq": b.next, "next_by_subj": b.subj})
	if err := b.c.nc.PublishRequest("$JS.API.DIRECT.GET."+bodyStream, b.inbox, req); err != nil {
		return fmt.Errorf("%w: read body %s: %v", ErrUnavailable, b.name, err)
	}
	wait := b.c.set.PublishTimeout
	if dl, ok := b.ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	m, err := b.sub.NextMsg(wait)
	if err != nil {
		return fmt.Errorf("%w: read body %s: %v", ErrUnavailable, b.name, err)
	}
	switch m.Header.Get("Status") {
	case "":
	case "404":
		return fmt.Errorf("%w: %s has %d of %d chunks", ErrBodyNotFound, b.name, b.got, b.chunks)
	default:
		return fmt.Errorf("%w: read body %s: status %s %s", ErrUnavailable, b.name, m.Header.Get("Status"), m.Header.Get("Description"))
	}
	seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	b.next = seq + 1
	b.got++
	b.read += int64(len(m.Data))
	b.cur = m.Data
	return nil
}

func (b *bodyReader) Close() error {
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
		b.sub = nil
	}
	return nil
}

// Body holders. A body object in the bucket is referenced by every job
// and dead letter that still needs it; the holder record (a key-value
// entry per object, updated with compare-and-set) lists them, and the
// object is deleted when the last one lets go. A job holds its body under
// its job ID, a dead letter under dlHolder(its ID).

// dlHolder is the name under which a dead letter holds its body object.
func dlHolder(id string) string { return dlHolderPrefix + id }

const dlHolderPrefix = "dl:"

// holdBody records holders of a body object (creating its record).
func (c *Client) holdBody(ctx context.Context, name string, holders ...string) error {
	// Most often the record does not exist yet (a new message): one
	// request creates it.
	cctx, cancel := c.withTimeout(ctx)
	val, _ := json.Marshal(holders)
	_, err := c.refs.Create(cctx, name, val)
	cancel()
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
	}
	_, _, err = c.updateBodyRefs(ctx, name, nil, holders)
	return err
}

// letGoBody removes a holder and deletes the body when nobody holds it
// any more. A holder that is not recorded is not an error.
func (c *Client) letGoBody(ctx context.Context, name, holder string) error {
	left, _, err := c.updateBodyRefs(ctx, name, []string{holder}, nil)
	if err != nil {
		return err
	}
	if left == 0 {
		return c.releaseBody(ctx, name)
	}
	return nil
}

// updateBodyRefs removes and adds holders of a body object atomically
// (compare-and-set). It reports how many holders remain and whether every
// holder in remove was present. A missing record reads as no holders.
func (c *Client) updateBodyRefs(ctx context.Context, name string, remove, add []string) (remaining int, held bool, err error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	for try := 0; try < 50; try++ {
		entry, err := c.refs.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if len(add) == 0 {
				return 0, len(remove) == 0, nil
			}
			val, _ := json.Marshal(add)
			if _, err := c.refs.Create(ctx, name, val); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return 0, false, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
			}
			return len(add), len(remove) == 0, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
		}
		holders, err := decodeHolders(name, entry.Value())
		if err != nil {
			return 0, false, err
		}
		held = true
		for _, r := range remove {
			i := slices.Index(holders, r)
			if i < 0 {
				held = false
				continue
			}
			holders = slices.Delete(holders, i, i+1)
		}
		for _, a := range add {
			if !slices.Contains(holders, a) {
				holders = append(holders, a)
			}
		}
		val, _ := json.Marshal(holders)
		if _, err := c.refs.Update(ctx, name, val, entry.Revision()); err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				continue // lost a race with another worker: read again
			}
			return 0, false, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
		}
		return len(holders), held, nil
	}
	return 0, false, fmt.Errorf("%w: body refs %s: too much contention", ErrUnavailable, name)
}

func decodeHolders(name string, val []byte) ([]string, error) {
	var holders []string
	if len(val) > 0 {
		if err := json.Unmarshal(val, &holders); err != nil {
			return nil, fmt.Errorf("body refs %s: %w", name, err)
		}
	}
	return holders, nil
}

// bodyHolders lists the holders of a body object (nil when none).
func (c *Client) bodyHolders(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	entry, err := c.refs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
	}
	return decodeHolders(name, entry.Value())
}

// releaseBody deletes a body that no job or dead letter holds any more,
// then its (empty) holder record.
func (c *Client) releaseBody(ctx context.Context, name string) error {
	dctx, cancel := c.withTimeout(ctx)
	err := c.bodies.Delete(dctx, name)
	cancel()
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: delete body %s: %v", ErrUnavailable, name, err)
	}
	if err := c.refs.Purge(ctx, name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: body refs %s: %v", ErrUnavailable, name, err)
	}
	return nil
}

// bodyObjects lists the body objects that have a holder record.
func (c *Client) bodyObjects(ctx context.Context) ([]string, error) {
	lister, err := c.refs.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: list body holders: %v", ErrUnavailable, err)
	}
	var out []string
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, replayKeyPrefix) {
			out = append(out, k)
		}
	}
	_ = lister.Stop() // the lister has ended: Stop only reports its closed subscription
	return out, nil
}

// bodyBucketSize is the stored size of the body bucket in bytes.
func (c *Client) bodyBucketSize(ctx context.Context) (uint64, error) {
	st, err := c.bodies.Status(ctx)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
