package mockprovider

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
)

// maxFormField bounds a multipart text field the mock reads.
const maxFormField = 1 << 20

// form is a multipart/form-data body: its text fields (the first of each
// name) and how many files it carries.
type form struct {
	fields map[string]string
	files  int64
}

// readForm reads the request's multipart body; ok is false when the body
// is not multipart.
func (x *exchange) readForm() (f form, ok bool, err error) {
	mt, params, _ := mime.ParseMediaType(x.r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		return form{}, false, nil
	}
	f.fields = make(map[string]string)
	mr := multipart.NewReader(bytes.NewReader(x.body), params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return f, true, nil
		}
		if err != nil {
			return f, true, errors.New("the multipart form is malformed: " + err.Error())
		}
		if part.FileName() != "" {
			f.files++
			continue
		}
		v, err := io.ReadAll(io.LimitReader(part, maxFormField))
		if err != nil {
			return f, true, errors.New("the multipart form is malformed: " + err.Error())
		}
		if _, seen := f.fields[part.FormName()]; !seen {
			f.fields[part.FormName()] = string(v)
		}
	}
}
